"""Encode -> generate -> decode masks: the one path from pixels and a prompt to an answer with masks,
shared by :class:`~lisa.inference.pipeline.LisaPipeline` and the ``generate`` validation protocol."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..model.generation import Generated, build_prefix, generate, image_prefix_length
from .cache import ImageEncoding


@dataclass
class Answer:
    generated: Generated
    text: str  # the answer without end-of-sequence tokens, stripped
    mask_logits: torch.Tensor | None  # [k, H, W] at the original image size, one per decoded [SEG] (bool: binary)
    mask_seconds: float = 0.0


@torch.no_grad()
def encode(model, clip_pixels: torch.Tensor, sam_pixels: torch.Tensor | None = None, resize=(0, 0),
           original_size=(0, 0), key: str = "") -> ImageEncoding:
    """CLIP features of ``clip_pixels`` [1, 3, h, w] and, for a model with a [SEG] head, the SAM
    image embedding of ``sam_pixels`` [1, 3, S, S] (``resize``: the image's size inside them)."""
    device = model.llm.get_input_embeddings().weight.device
    t0 = time.perf_counter()
    clip_feats = model.encode_clip(clip_pixels.to(device))[0]
    t1 = time.perf_counter()
    sam_embedding = None
    if model.config.has_seg_head and sam_pixels is not None:
        sam_embedding = model.encode_sam(sam_pixels.to(device))
    t2 = time.perf_counter()
    return ImageEncoding(key, clip_feats, sam_embedding, tuple(int(v) for v in resize),
                         tuple(int(v) for v in original_size), {"vision_tower": t1 - t0, "sam_encoder": t2 - t1})


@torch.no_grad()
def answer(model, tokenizer, prompt_ids: list[int], enc: ImageEncoding, *, max_new_tokens: int,
           use_prefix: bool = False, skip_segs: int = 0, max_masks: int | None = None, binary: bool = False,
           pick=None, on_token=None, fast=None) -> Answer:
    """Generate the answer to ``prompt_ids`` (with image tokens) about the image of ``enc`` and decode
    a mask for every ``[SEG]`` after the first ``skip_segs`` (those typed in the prompt or answered in
    earlier turns), at most ``max_masks`` of them. ``use_prefix``: keep the KV cache of the prompt's
    opening (up to the image) in ``enc`` and start from it when a later prompt shares it. ``pick`` and
    ``on_token``: the generation loop's sampling and per-token hooks (greedy and silent when None).
    ``fast``: a :class:`~lisa.model.static_decode.FastDecoding` to decode through (eager when None,
    or when the query is longer than its largest bucket)."""
    n_prefix = image_prefix_length(prompt_ids) if use_prefix else 0
    t0 = time.perf_counter()
    if n_prefix and (enc.prefix is None or not enc.prefix.matches(prompt_ids)):
        enc.prefix = build_prefix(model, prompt_ids[:n_prefix], enc.clip_feats)
    prefix_seconds = time.perf_counter() - t0
    input_ids = torch.tensor([prompt_ids], dtype=torch.long)
    args = dict(max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                prefix=enc.prefix if use_prefix else None, pick=pick, on_token=on_token)
    gen = fast.generate(model, input_ids, enc.clip_feats, **args) if fast is not None else None
    if gen is None:
        gen = generate(model, input_ids, enc.clip_feats, **args)
    gen.timings["prefill"] += prefix_seconds
    logits, mask_seconds = seg_masks(model, gen, enc, skip_segs=skip_segs, max_masks=max_masks, binary=binary)
    return Answer(gen, answer_text(tokenizer, gen.new_ids), logits, mask_seconds)


@torch.no_grad()
def seg_masks(model, gen: Generated, enc: ImageEncoding, *, skip_segs: int = 0, max_masks: int | None = None,
              binary: bool = False) -> tuple[torch.Tensor | None, float]:
    """Mask logits [k, H, W] of the generated ``[SEG]``s after the first ``skip_segs`` (None when
    there are none or the model has no [SEG] head), and the seconds it took. ``binary``: boolean
    masks instead, each thresholded as soon as it is upsampled (one float mask of the image's size
    at a time, not k)."""
    t0 = time.perf_counter()
    seg_hidden = gen.seg_hidden[skip_segs:]
    if max_masks is not None:
        seg_hidden = seg_hidden[:max_masks]
    logits = None
    if model.config.has_seg_head and seg_hidden.shape[0]:
        emb = model.seg_embeddings(seg_hidden)
        if binary:
            logits = torch.stack(list(model.iter_bool_masks(enc.sam_embedding, emb, enc.resize, enc.original_size)))
        else:
            logits = model.decode_masks(enc.sam_embedding, emb, enc.resize, enc.original_size)
    return logits, time.perf_counter() - t0


def answer_text(tokenizer, new_ids: list[int]) -> str:
    """The answer as shown to users: the generated ids without the end of sequence."""
    from ..tokenization import decode_answer

    ids = [i for i in new_ids if i != tokenizer.eos_token_id]
    return decode_answer(tokenizer, ids).replace("</s>", "").strip()
