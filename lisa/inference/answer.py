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
    mask_logits: torch.Tensor | None  # [k, H, W] at the original image size, one per decoded [SEG]
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
           use_prefix: bool = False, skip_segs: int = 0, max_masks: int | None = None) -> Answer:
    """Generate the answer to ``prompt_ids`` (with image tokens) about the image of ``enc`` and decode
    a mask for every ``[SEG]`` after the first ``skip_segs`` (those typed in the prompt or answered in
    earlier turns), at most ``max_masks`` of them. ``use_prefix``: keep the KV cache of the prompt's
    opening (up to the image) in ``enc`` and start from it when a later prompt shares it."""
    n_prefix = image_prefix_length(prompt_ids) if use_prefix else 0
    t0 = time.perf_counter()
    if n_prefix and (enc.prefix is None or not enc.prefix.matches(prompt_ids)):
        enc.prefix = build_prefix(model, prompt_ids[:n_prefix], enc.clip_feats)
    prefix_seconds = time.perf_counter() - t0
    input_ids = torch.tensor([prompt_ids], dtype=torch.long)
    gen = generate(model, input_ids, enc.clip_feats, max_new_tokens=max_new_tokens,
                   eos_token_id=tokenizer.eos_token_id, prefix=enc.prefix if use_prefix else None)
    gen.timings["prefill"] += prefix_seconds
    t0 = time.perf_counter()
    seg_hidden = gen.seg_hidden[skip_segs:]
    if max_masks is not None:
        seg_hidden = seg_hidden[:max_masks]
    logits = None
    if model.config.has_seg_head and seg_hidden.shape[0]:
        emb = model.seg_embeddings(seg_hidden)
        logits = model.decode_masks(enc.sam_embedding, emb, enc.resize, enc.original_size)
    mask_seconds = time.perf_counter() - t0
    from ..tokenization import decode

    new_ids = [i for i in gen.new_ids if i != tokenizer.eos_token_id]
    text = decode(tokenizer, new_ids).replace("</s>", "").strip()
    return Answer(gen, text, logits, mask_seconds)
