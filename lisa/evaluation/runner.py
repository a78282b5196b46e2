"""Validation over a data set: teacher-forced (the original protocol) or free generation.

``teacher``: every query is answered with the fixed "[SEG]." in the prompt (the original LISA
validation protocol); the mask
comes from the [SEG] of that answer. ``generate``: the model answers the question itself; the
first [SEG] it writes gives the mask, an answer without [SEG] counts as an empty mask, and how
often [SEG] was produced is reported.

Data parallel: process ``r`` of ``w`` takes the images ``r, r + w, ...`` (no padding duplicates,
unlike the original's DistributedSampler); per-sample results are gathered to every process and
sorted in data-set order, so the metrics equal a one-process run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import dist
from ..conversation import expand_image_token, get_template
from ..data.templates import VAL_ANSWER, VAL_LONG_QUESTION, VAL_SHORT_QUESTION, build_conversation
from .metrics import IGNORE, SampleResult, summarize

log = logging.getLogger("lisa.eval")

PROTOCOLS = ("teacher", "generate")


def all_query_item(dataset, idx: int, item: dict) -> dict:
    """``item`` with every query text of the image (ReasonSeg keeps only the first by default)."""
    if getattr(dataset, "kind", None) != "reason_seg":
        return item
    from ..data.reason_seg import read_annotation

    i = dataset.records[idx]
    h, w = item["label"].shape[-2:]
    _, texts, is_sentence = read_annotation(dataset.source.record_path(i), int(h), int(w))
    template = VAL_LONG_QUESTION if is_sentence else VAL_SHORT_QUESTION
    questions = [template.format(t) for t in texts]
    item = dict(item)
    item["questions"] = questions
    item["sampled_classes"] = list(texts)
    item["conversations"] = [build_conversation([(q, VAL_ANSWER)], dataset.conv_type) for q in questions]
    item["masks"] = item["masks"][:1].expand(len(questions), -1, -1).clone()
    return item


def ground_truth(item: dict) -> torch.Tensor:
    """[k, H, W] int with 255 where the image's ignore map says so."""
    gt = item["masks"].int().clone()
    ignore = item["label"] == IGNORE
    gt[:, ignore] = IGNORE
    return gt


def _model_device(model) -> torch.device:
    return model.llm.get_input_embeddings().weight.device


@torch.no_grad()
def _teacher(model, tokenizer, item, conv_type) -> tuple[list, list, list]:
    from ..data.collate import collate

    batch = collate([item], tokenizer, conv_type=conv_type, use_mm_start_end=model.config.mm_use_im_start_end,
                    model_max_length=10**9, num_image_tokens=model.config.num_image_tokens)
    device = _model_device(model)
    out = model(images_clip=batch.images_clip.to(device), images=batch.images.to(device),
                input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                offset=batch.offset, masks_list=batch.masks_list, label_list=batch.label_list,
                resize_list=batch.resize_list, inference=True)
    logits = out["pred_masks"][0]
    return [logits[j] > 0 for j in range(logits.shape[0])], [1] * logits.shape[0], []


@torch.no_grad()
def _generate(model, tokenizer, item, conv_type, max_new_tokens) -> tuple[list, list, list]:
    """The model answers each question freely through the pipeline's path; its first [SEG] gives the mask."""
    from ..inference.answer import answer, encode
    from ..tokenization import tokenizer_image_token

    h, w = (int(v) for v in item["label"].shape[-2:])
    enc = encode(model, item["images_clip"][None], item["images"][None], item["resize"], (h, w))
    preds, counts, answers = [], [], []
    for question in item["questions"]:
        conv = get_template(conv_type)
        conv.append_user(question)
        conv.append_assistant(None)
        prompt = conv.get_prompt()
        if model.config.mm_use_im_start_end:
            prompt = expand_image_token(prompt)
        out = answer(model, tokenizer, tokenizer_image_token(prompt, tokenizer), enc,
                     max_new_tokens=max_new_tokens, max_masks=1)
        counts.append(int(out.generated.seg_hidden.shape[0]))
        answers.append(out.text)
        if out.mask_logits is not None:
            preds.append(out.mask_logits[0] > 0)
        else:
            preds.append(torch.zeros((h, w), dtype=torch.bool))
    return preds, counts, answers


def _save(save_dir: Path, item: dict, index: int, preds: list[torch.Tensor]) -> None:
    from ..data.files import read_rgb
    from ..inference.visualize import save_masks

    stem = f"{index:05d}_{Path(item['image_path']).stem}"
    image = read_rgb(item["image_path"])
    save_masks(image, [p.cpu().numpy().astype(bool) for p in preds], save_dir, stem)


def evaluate(model, tokenizer, dataset, protocol: str = "teacher", *, all_queries: bool = False,
             conv_type: str = "llava_v1", max_new_tokens: int = 32, save_masks: str | None = None,
             progress: bool = True, name: str = "") -> dict:
    """Metrics over ``dataset`` (a ``lisa.data.ValDataset``); see the module doc. Every process of a
    launched group must call it; every one gets the same result dict."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    if not model.config.has_seg_head:
        raise ValueError("gIoU/cIoU evaluation needs a LISA model with a [SEG] head")
    was_training = model.training
    model.eval()
    rank, world = dist.rank(), dist.world_size()
    # Every process runs the same number of items (the last ones repeat an item and drop its result):
    # under ZeRO-3 each forward gathers parameters with collectives that all processes must join.
    per_rank = -(-len(dataset) // world)
    mine = [rank + world * i for i in range(per_rank)]
    results: list[SampleResult] = []
    for idx in tqdm(mine, desc=f"eval {name}".strip(), disable=not progress or not dist.is_main(), unit="img"):
        padding = idx >= len(dataset)
        idx = idx % len(dataset)
        item = dataset[idx]
        if all_queries:
            item = all_query_item(dataset, idx, item)
        gt = ground_truth(item)
        if protocol == "teacher":
            preds, counts, answers = _teacher(model, tokenizer, item, conv_type)
        else:
            preds, counts, answers = _generate(model, tokenizer, item, conv_type, max_new_tokens)
        if len(preds) != gt.shape[0]:
            raise RuntimeError(f"{item['image_path']}: {len(preds)} predicted masks for {gt.shape[0]} targets")
        if padding:
            continue
        res = SampleResult(idx, item["image_path"], list(item["questions"]))
        for pred, target in zip(preds, gt):
            res.add(pred.cpu(), target)
        if protocol == "generate":
            res.seg_counts, res.answers = counts, answers
        results.append(res)
        if save_masks:
            _save(Path(save_masks), item, idx, preds)
    gathered = [r for part in dist.all_gather_objects(results) for r in part]
    gathered.sort(key=lambda r: r.index)
    if was_training:
        model.train()
    metrics = summarize(gathered)
    metrics.update(protocol=protocol, val_dataset=name, all_queries=all_queries,
                   samples=[r.to_dict() for r in gathered])
    return metrics


def format_table(results: list[dict]) -> str:
    rows = [("val set", "protocol", "images", "masks", "gIoU", "cIoU", "[SEG] rate")]
    for m in results:
        rate = f"{m['seg_rate']:.3f}" if "seg_rate" in m else "-"
        rows.append((m.get("val_dataset", ""), m["protocol"], str(m["num_images"]), str(m["num_masks"]),
                     f"{m['giou']:.4f}", f"{m['ciou']:.4f}", rate))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

