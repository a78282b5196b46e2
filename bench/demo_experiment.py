"""Plain-PyTorch experiment for the demo model: how fast does it learn the shapes task on this CPU?

    python bench/demo_experiment.py --data demo_out/data --steps 600 --eval_every 200

The defaults are the demo's recipe (lisa/demo/recipe.py, lisa/demo/tiny_model.py); flags change one
part at a time. ``--oracle 1`` replaces the LLM by an ideal bag of content words (an upper bound for
what SAM can learn in the budget).

Prints loss and timings, then gIoU/cIoU (teacher-forced) on the val split.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import time

import numpy as np
import torch

from lisa.data.collate import collate
from lisa.data.reason_seg import ReasonSegDataset
from lisa.data.validation import ValDataset
from lisa.demo.recipe import DemoRecipe
from lisa.demo.tiny_model import (
    DEMO_SIZES,
    IDF_SHARPNESS,
    OPEN_CHANNELS,
    PROMPT_GAIN,
    QK_GAIN,
    build_demo_model,
    build_demo_tokenizer,
)
from lisa.evaluation.metrics import IGNORE, intersection_union, mask_iou

RECIPE = DemoRecipe()


@torch.no_grad()
def evaluate(model, tokenizer, val, n_tokens, batch=8, limit=None, families=None):
    model.eval()
    inter_sum = union_sum = 0.0
    ious = []
    per_family = {}
    n = len(val) if limit is None else min(limit, len(val))
    for start in range(0, n, batch):
        items = [val[i] for i in range(start, min(n, start + batch))]
        b = collate(items, tokenizer, num_image_tokens=n_tokens)
        out = model(**{k: b[k] for k in ("images", "images_clip", "input_ids", "attention_mask", "offset",
                                         "masks_list", "label_list", "resize_list")}, inference=True)
        for pred, gt, lab in zip(out["pred_masks"], b["masks_list"], b["label_list"]):
            for k in range(gt.shape[0]):
                target = torch.where(lab == IGNORE, IGNORE, (gt[k] > 0).long())
                i, u = intersection_union((pred[k] > 0).long(), target)
                inter_sum += float(i[1])
                union_sum += float(u[1])
                ious.append(float(mask_iou(i, u)[1]))
    if families:
        for f, v in zip(families, ious):
            per_family.setdefault(f, []).append(v)
        print("   " + " ".join(f"{f}={np.mean(v):.2f}" for f, v in sorted(per_family.items())), flush=True)
    model.train()
    return float(np.mean(ious)), inter_sum / (union_sum + 1e-10)


def question_family(data_seed: int, index: int) -> str:
    """The val question's family; "{colour} {shape}" questions whose colour alone is ambiguous
    (another shape of that colour: only the kind tells) are "colour_shape_kind"."""
    from lisa.demo.shapes import _reason_seg_sample

    _, shapes, record, family = _reason_seg_sample(data_seed, "val", index)
    if family == "colour_shape":
        target = [tuple(int(v) for v in p) for p in record["shapes"][0]["points"]]
        colour = next(s.colour for s in shapes if list(s.points) == target)
        if sum(s.colour == colour for s in shapes) > 1:
            return "colour_shape_kind"
    return family


ORACLE_WORDS = (r"\bred", r"\bgreen", r"\bblue", r"\byellow", r"circle", r"square", r"triangle",
                r"\bnot\b|non-", r"largest|biggest|most area", r"smallest|tiniest|least area",
                r"\bleft", r"\bright", r"top|highest", r"bottom|lowest")


def install_oracle(model, tok):
    """The prompt of each [SEG] = Linear(indicator of content words of its question): what a perfect
    bag-of-words language model would give SAM."""
    import re
    n = len(ORACLE_WORDS)
    model.oracle = torch.nn.Linear(n, model.config.out_dim)
    queue = []
    forward = model.forward

    def features(ids):
        text = tok.decode([int(t) for t in ids if t >= 0])
        q = text.split("USER:")[-1].split("ASSISTANT:")[0].lower()
        return torch.tensor([1.0 if re.search(w, q) else 0.0 for w in ORACLE_WORDS])

    def patched_forward(**kw):
        queue.clear()
        queue.extend(features(row) for row in kw["input_ids"])
        return forward(**kw)

    def seg_embeddings(h):
        feats = torch.stack([queue.pop(0) for _ in range(h.shape[0])])
        return model.oracle(feats) + 0.0 * h.sum()
    model.forward = patched_forward
    model.seg_embeddings = seg_embeddings


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=RECIPE.steps)
    ap.add_argument("--batch", type=int, default=RECIPE.batch_size)
    ap.add_argument("--texts", type=int, default=RECIPE.texts_per_image, help="num_classes_per_sample")
    ap.add_argument("--lr", type=float, default=RECIPE.lr)
    ap.add_argument("--warmup", type=int, default=RECIPE.warmup_steps)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--train_sam_encoder", type=int, default=1)
    ap.add_argument("--encoder_lr_scale", type=float, default=1.0, help="SAM encoder's learning rate / --lr")
    ap.add_argument("--train_clip", type=int, default=0)
    ap.add_argument("--sizes", default="{}", help="JSON overrides of DEMO_SIZES parts")
    ap.add_argument("--eval_every", type=int, default=0)
    ap.add_argument("--eval_n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default="/tmp/demo_exp_model.pt")
    ap.add_argument("--ce_weight", type=float, default=1.0)
    ap.add_argument("--dice_weight", type=float, default=0.5, help="the mask loss's dice weight (LISA: 0.5)")
    ap.add_argument("--bce_weight", type=float, default=2.0, help="the mask loss's BCE weight (LISA: 2.0)")
    ap.add_argument("--init_range", type=float, default=0.02)
    ap.add_argument("--freeze_llm", type=int, default=1, help="1: body frozen (embeddings train); 2: also q/v train")
    ap.add_argument("--mix", default="reason_seg||refer_seg",
                    help='e.g. "reason_seg||refer_seg"; sem_seg reads the kind maps of '
                    'lisa.demo.semantic_shapes (mapillary; '
                    "write them with bench/sam_pretrain.py --steps 0 or write_semantic_shapes)")
    ap.add_argument("--rates", default="1,1")
    ap.add_argument("--whiten", type=float, default=0.0, help="whiten the [SEG] head (variance floor)")
    ap.add_argument("--bow", type=float, default=8.0, help="bag-of-words LLM init with this beta")
    ap.add_argument("--idf", type=float, default=IDF_SHARPNESS,
                    help="bag-of-words layer 0 attends by token importance (IDF) with this sharpness")
    ap.add_argument("--prompt_gain", type=float, default=PROMPT_GAIN,
                    help="multiply the [SEG] head's last layer by this at init (larger prompts)")
    ap.add_argument("--oracle", type=int, default=0,
                    help="1: the SAM prompt is a linear map of the question's content words (bypasses the LLM)")
    ap.add_argument("--data_seed", type=int, default=0)
    ap.add_argument("--freeze_projector", type=int, default=1, help="1: keep mm_projector at its init")
    ap.add_argument("--qk_gain", type=float, default=QK_GAIN,
                    help="multiply the mask decoder's q/k projection weights by this at init (sharper attention)")
    ap.add_argument("--open", type=int, default=OPEN_CHANNELS,
                    help="encoder channels copied through the decoder's upscaling at init (lisa.demo.init_weights)")
    ap.add_argument("--encoder_from", type=int, default=0,
                    help="train only the SAM encoder's layers from this index on (and its neck)")
    ap.add_argument("--train_embed", type=int, default=1, help="0: keep the LLM's token embeddings frozen too")
    ap.add_argument("--sam_init", default="", help="a state dict for sam or sam.vision_encoder (bench/sam_pretrain.py)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    sizes = copy.deepcopy(DEMO_SIZES)
    for part, over in json.loads(args.sizes).items():
        if isinstance(over, dict):
            sizes[part].update(over)
        else:
            sizes[part] = over
    sizes["llm"]["initializer_range"] = args.init_range
    tok = build_demo_tokenizer(args.data, args.save + ".tok", sizes["vocab"])
    importance = None
    if args.idf:
        from lisa.demo.init_weights import token_importance
        from lisa.demo.tiny_model import data_texts, template_texts
        importance = token_importance(tok, data_texts(args.data), template_texts())
    model = build_demo_model(tok, seed=args.seed, sizes=sizes, llm_init="bow" if args.bow else "random",
                             bow_beta=args.bow or 8.0, importance=importance, sharpness=args.idf or 8.0,
                             prompt_gain=args.prompt_gain, qk_gain=args.qk_gain,
                             open_channels=args.open)
    if args.sam_init:  # SAM's state dict (bench/sam_pretrain.py) or its encoder's
        state = torch.load(args.sam_init, weights_only=True)
        if any(k.startswith("vision_encoder.") for k in state):  # SAM's: only its encoder was pretrained
            state = {k.removeprefix("vision_encoder."): v for k, v in state.items() if k.startswith("vision_encoder.")}
        model.sam.vision_encoder.load_state_dict(state)
    cfg = model.config
    cfg.ce_loss_weight = args.ce_weight
    cfg.dice_loss_weight, cfg.bce_loss_weight = args.dice_weight, args.bce_weight
    n_tokens = cfg.num_image_tokens
    top_layers = range(args.encoder_from, sizes["sam"]["num_hidden_layers"])
    trained_top = ("sam.vision_encoder.neck", *(f"sam.vision_encoder.layers.{i}." for i in top_layers))
    for name, p in model.named_parameters():
        p.requires_grad = "positional_embedding" not in name
        if name.startswith("vision_tower") and not args.train_clip:
            p.requires_grad = False
        if name.startswith("mm_projector") and args.freeze_projector:
            p.requires_grad = False
        if name.startswith("sam.vision_encoder") and not args.train_sam_encoder:
            p.requires_grad = False
        if args.encoder_from and name.startswith("sam.vision_encoder") and not name.startswith(trained_top):
            p.requires_grad = False
        if "embed_tokens" in name and not args.train_embed:
            p.requires_grad = False
        if args.freeze_llm and name.startswith("llm.model.") and "embed_tokens" not in name and not (
                args.freeze_llm == 2 and ("q_proj" in name or "v_proj" in name)):
            p.requires_grad = False
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"params {n_params/1e6:.2f}M trainable {n_train/1e6:.2f}M; vocab {len(tok)}; image tokens {n_tokens}",
          flush=True)

    if args.mix:
        from lisa.data import build_train_dataset
        ds = build_train_dataset({"dataset_dir": args.data, "dataset": args.mix, "sample_rates": args.rates,
                                  "refer_seg_data": "refcoco", "sem_seg_data": "mapillary",
                                  "vqa_data": "synth_vqa", "explanatory": -1,
                                  "num_classes_per_sample": args.texts, "seed": args.seed},
                                 clip_size=cfg.clip_image_size, sam_size=cfg.sam_image_size,
                                 samples_per_epoch=args.steps * args.batch)
    else:
        ds = ReasonSegDataset(args.data, "ReasonSeg|train", explanatory=-1, samples_per_epoch=args.steps * args.batch,
                              num_classes_per_sample=args.texts, clip_size=cfg.clip_image_size,
                              sam_size=cfg.sam_image_size, seed=args.seed)
    val = ValDataset(args.data, "ReasonSeg|val", clip_size=cfg.clip_image_size, sam_size=cfg.sam_image_size)
    fams = [question_family(args.data_seed, i) for i in range(min(args.eval_n, len(val)))]
    loader = torch.utils.data.DataLoader(
        ds, batch_size=args.batch, shuffle=False, num_workers=args.workers,
        collate_fn=lambda b: collate(b, tok, num_image_tokens=n_tokens), persistent_workers=False)
    if args.whiten:
        from lisa.demo.init_weights import seg_hidden_states, whiten_seg_head
        probe = [collate([ds[i] for i in range(k, k + 8)], tok, num_image_tokens=n_tokens) for k in range(0, 256, 8)]
        hs = seg_hidden_states(model, probe)
        whiten_seg_head(model, hs, args.seed, floor=args.whiten)
        print(f"whitened the [SEG] head on {hs.shape[0]} hidden states", flush=True)
    if args.oracle:
        install_oracle(model, tok)
    encoder = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("sam.vision_encoder")]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("sam.vision_encoder")]
    opt = torch.optim.AdamW([{"params": rest}, {"params": encoder, "lr": args.lr * args.encoder_lr_scale}],
                            lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)

    def lr_at(step):
        if step < args.warmup:
            return (step + 1) / args.warmup
        return max(0.0, (args.steps - step) / max(1, args.steps - args.warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    t0 = time.time()
    data_t = 0.0
    tl = time.time()
    keys = ("images", "images_clip", "input_ids", "labels", "attention_mask", "offset", "masks_list",
            "label_list", "resize_list")
    curve = []
    for step, batch in enumerate(loader):
        data_t += time.time() - tl
        out = model(**{k: batch[k] for k in keys})
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 20 == 0 or step == args.steps - 1:
            el = time.time() - t0
            print(f"step {step:4d} t={el:6.1f}s data={data_t:5.1f}s loss {out['loss'].item():.4f} "
                  f"ce {out['ce_loss'].item():.4f} bce {out['mask_bce_loss'].item():.4f} "
                  f"dice {out['mask_dice_loss'].item():.4f}", flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            te = time.time()
            g, c = evaluate(model, tok, val, n_tokens, limit=args.eval_n, families=fams)
            t0 += time.time() - te
            curve.append((time.time() - t0, g, c))
            print(f"  eval@{step+1}: gIoU {g:.4f} cIoU {c:.4f}", flush=True)
        tl = time.time()
    train_s = time.time() - t0
    te = time.time()
    g, c = evaluate(model, tok, val, n_tokens, limit=args.eval_n, families=fams)
    print(f"FINAL train {train_s:.1f}s eval {time.time()-te:.1f}s gIoU {g:.4f} cIoU {c:.4f} "
          f"maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1e6:.2f}GB", flush=True)
    torch.save(model.state_dict(), args.save)


if __name__ == "__main__":
    sys.exit(main())
