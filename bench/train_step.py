"""One training step's forward + backward on the same batch, against the original LISA algorithm.

    python bench/train_step.py --preset medium --threads 2 --baseline
    python bench/train_step.py --preset medium --profile         # where the time goes, per op

The model is set up as `lisa train` sets it up (LoRA on q/v, the original's trainable parts,
gradient checkpointing on the LLM) with random weights; the batch is one collated batch of the
data layer's ReasonSeg + LLaVA readers on the synthetic shapes data (`lisa.demo.shapes`), 2 images
with their conversations. No optimizer step: the optimizer's cost is the same for both.

``--baseline`` also times an emulation of the original's ``model_forward`` on the same model and
batch: CLIP run once per conversation (the image repeated), logits and cross entropy at every
position, every layer's hidden states kept, the [SEG] head run on every position, SAM's encoder
one image at a time and its mask decoder once per image. Like `bench/inference.py --baseline` it
leaves out costs the original also has (its tokenizer-side and Python overheads), so the ratio it
prints is a lower bound for the real original.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from inference import PRESETS  # noqa: E402  (bench/ is on sys.path when run as a script)


def build_batch(model_config, tokenizer, data_dir: Path, batch_size: int, seed: int = 0):
    from lisa.demo.shapes import write_dataset
    from lisa.train.args import namespace
    from lisa.train.data import build_dataset, make_collate

    write_dataset(data_dir, n_train=8, n_val=0, seed=seed, progress=False)
    args = namespace(version="(random)", dataset_dir=str(data_dir), dataset="reason_seg||vqa", sample_rates="3,1",
                     reason_seg_data="ReasonSeg|train", vqa_data="synth_vqa", batch_size=batch_size, workers=0,
                     epochs=1, steps_per_epoch=4, no_eval=True, explanatory=-1, seed=seed)
    dataset = build_dataset(args, model_config, 0)
    dataset.set_epoch(0)
    collate = make_collate(args, tokenizer, model_config)
    return collate([dataset[i] for i in range(batch_size)])


def prepare(model, batch, dtype):
    return batch.to("cpu", dtype)


def original_forward(model, images_clip, input_ids, offset, images, labels, attention_mask, masks_list,
                     label_list, resize_list, **_unused):
    """The original ``LISAForCausalLM.model_forward`` in training mode, on this project's modules."""
    from lisa.model.splice import splice_image_features
    from lisa.preprocess import postprocess_masks

    offset = torch.as_tensor(offset)
    # SAM's encoder one image at a time, without autograd
    with torch.no_grad():
        embeds = torch.cat([model.sam.vision_encoder(images[i:i + 1]).last_hidden_state
                            for i in range(images.shape[0])], 0)
    # CLIP once per conversation: the image repeated offset[b+1]-offset[b] times
    clip_in = torch.cat([images_clip[b:b + 1].expand(int(offset[b + 1] - offset[b]), -1, -1, -1)
                         for b in range(images_clip.shape[0])], 0)
    feats = model.encode_clip(clip_in)
    sp = splice_image_features(input_ids, model.llm.get_input_embeddings(), list(feats), attention_mask, labels)
    out = model.decoder(inputs_embeds=sp.inputs_embeds, attention_mask=sp.attention_mask,
                        output_hidden_states=True, use_cache=False)
    hidden = out.last_hidden_state
    logits = model.lm_head(hidden).float()  # every position
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), sp.labels[:, 1:].reshape(-1),
                         ignore_index=-100)
    # the [SEG] head on every position, then the [SEG] rows picked
    seg = torch.zeros_like(input_ids, dtype=torch.bool)
    seg[:, :-1] = input_ids[:, 1:] == model.seg_token_id
    spliced_seg = torch.zeros(sp.inputs_embeds.shape[:2], dtype=torch.bool)
    for n in range(input_ids.shape[0]):
        idx = seg[n].nonzero().flatten()
        spliced_seg[n, sp.span_end[n, idx]] = True
    pred = model.text_hidden_fcs[0](hidden)[spliced_seg]
    counts = spliced_seg.sum(-1)
    cum = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])[offset]
    bce = dice = hidden.new_zeros(())
    n_masks = 0
    from lisa.model.losses import bce_loss_sum, dice_loss_sum

    for b in range(images.shape[0]):  # mask decoder once per image
        text = pred[int(cum[b]):int(cum[b + 1])]
        low = model.prompter.decode(embeds[b:b + 1], text)
        masks = postprocess_masks(low, tuple(resize_list[b]), tuple(label_list[b].shape[-2:]),
                                  model.config.sam_image_size)
        gt = masks_list[b]
        if gt.shape[0]:
            bce = bce + bce_loss_sum(masks, gt)
            dice = dice + dice_loss_sum(masks, gt)
            n_masks += gt.shape[0]
    cfg = model.config
    return ce * cfg.ce_loss_weight + (cfg.bce_loss_weight * bce + cfg.dice_loss_weight * dice) / (n_masks + 1e-8)


def time_steps(fn, runs: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        fn()
        out.append((time.perf_counter() - t, time.process_time() - c))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="medium", choices=sorted(PRESETS))
    ap.add_argument("--batch_size", type=int, default=2, help="images per batch")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--baseline", action="store_true", help="also time the original algorithm's step")
    ap.add_argument("--no_gradient_checkpointing", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print the per-op profile of one step")
    ap.add_argument("--plain_allocator", action="store_true",
                    help="leave glibc's allocation policy as it is (lisa train raises its thresholds)")
    ap.add_argument("--as_before", action="store_true",
                    help="time the step without this project's CPU step changes (allocator policy, SAM bias "
                         "buffer, no SAM encoding of images without [SEG]), to compare")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from train import build_model  # bench/train.py

    from lisa.checkpoint.tiny import TINY_TEXTS
    from lisa.model.allocator import reuse_freed_memory
    from lisa.model.sam_attention import BandedRelPosAttention
    from lisa.tokenization import add_lisa_tokens, train_llama_style_tokenizer
    from lisa.train.model_setup import LoraSettings, apply_lora, enable_checkpointing, set_trainable

    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="lisa_bench_step_"))
    tok = train_llama_style_tokenizer(TINY_TEXTS, 400, tmp / "tok")
    seg_id = add_lisa_tokens(tok)
    model = build_model(a.preset, torch.float32, torch.device("cpu"), seg_id)
    model.train()
    if not a.no_gradient_checkpointing:
        enable_checkpointing(model.llm)
    apply_lora(model, LoraSettings(8, 16, 0.05, ["q_proj", "v_proj"]))
    set_trainable(model)
    batch = prepare(model, build_batch(model.config, tok, tmp / "data", a.batch_size), torch.float32)
    n_conv, length = batch["input_ids"].shape
    print(f"preset={a.preset} threads={torch.get_num_threads()} images={a.batch_size} conversations={n_conv} "
          f"tokens={length} (+{model.config.num_image_tokens - 1} per image token) "
          f"load average={' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    def step(forward):
        def run():
            model.zero_grad(set_to_none=True)
            loss = forward()
            loss.backward()
        return run

    ours = step(lambda: model(**batch)["loss"])
    rows = {}
    if a.baseline:  # first, in the plain process state the original runs in
        BandedRelPosAttention.reuse_bias_buffer = False  # a fresh bias tensor per band, as before
        rows["original algorithm"] = time_steps(step(lambda: original_forward(model, **batch)), a.runs)
        BandedRelPosAttention.reuse_bias_buffer = True
    if a.as_before:
        BandedRelPosAttention.reuse_bias_buffer = False
        type(model).skip_unprompted_images = False
    elif not a.plain_allocator:
        reuse_freed_memory()  # as lisa train does
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        ours()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            ours()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
        return 0
    rows["forward + backward"] = time_steps(ours, a.runs)
    print(f"{'(s)':<24}{'median':>8}{'min':>8}{'max':>8}{'CPU s':>8}")
    for name, v in rows.items():
        wall = [w for w, _ in v]
        print(f"{name:<24}{statistics.median(wall):>8.3f}{min(wall):>8.3f}{max(wall):>8.3f}"
              f"{statistics.median(c for _, c in v):>8.3f}")
    if a.baseline:
        r = (statistics.median(w for w, _ in rows["original algorithm"])
             / statistics.median(w for w, _ in rows["forward + backward"]))
        print(f"speed-up over the original algorithm: {r:.2f}x (an emulation: it leaves out some of the "
              "original's costs, so the real original is slower still)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
