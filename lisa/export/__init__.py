"""``lisa export``: a training run (or DeepSpeed checkpoint, or consolidated state dict) -> a merged
model folder that ``lisa chat`` loads; ``format="lisa"`` writes the released LISA layout, ``"llava"``
the original LLaVA repository's and ``"llava-hf"`` transformers' ``LlavaForConditionalGeneration``
(:mod:`lisa.export.llava_formats`)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..precision import to_dtype

log = logging.getLogger("lisa.export")

FORMATS = ("native", "lisa", "llava", "llava-hf")


def cast_like_release(model, dtype: torch.dtype):
    """LLM, projector and CLIP in ``dtype``; SAM and the [SEG] head in fp32 (as the released shards)."""
    model.llm.to(dtype)
    model.mm_projector.to(dtype)
    model.vision_tower.to(dtype)
    if model.config.has_seg_head:
        model.sam.float()
        model.text_hidden_fcs.float()
    return model


def export(source, save_path, format: str = "native", *, version: str | None = None, tag: str | None = None,
           precision: str | None = None, lora_alpha: float | None = None, vision_tower: str | None = None,
           sam_config: str | None = None, use_mm_start_end: bool = True, max_shard_size="10GB",
           progress: bool = True) -> Path:
    """Merge LoRA into the base weights and write a model folder; returns ``save_path``.

    ``precision``: dtype of the LLM/projector/CLIP tensors (SAM and the [SEG] head stay fp32);
    default: the run's training precision, else bf16.
    """
    from tqdm.auto import tqdm

    from ..checkpoint.saver import save_pretrained
    from .sources import load_merged

    if format not in FORMATS:
        raise ValueError(f"unknown --format {format!r}; use one of {', '.join(FORMATS)}")
    stages = tqdm(total=3, desc="export", disable=not progress, unit="stage")
    stages.set_postfix_str("consolidating + merging")
    model, tokenizer, info = load_merged(source, version=version, tag=tag, lora_alpha=lora_alpha,
                                         vision_tower=vision_tower, sam_config=sam_config,
                                         use_mm_start_end=use_mm_start_end, progress=progress)
    stages.update(1)
    precision = precision or info.get("precision") or "bf16"
    cast_like_release(model, to_dtype(precision))
    stages.set_postfix_str(f"writing {format} folder")
    stages.update(1)
    if format in ("llava", "llava-hf"):
        from .llava_formats import save_llava, save_llava_hf

        writer = save_llava if format == "llava" else save_llava_hf
        out = writer(model, tokenizer, save_path, max_shard_size=max_shard_size, progress=progress)
    else:
        out = save_pretrained(model, tokenizer, save_path, format=format, max_shard_size=max_shard_size,
                              progress=progress)
    stages.update(1)
    stages.close()
    log.info("exported %s (%s, tag %s) to %s", info["source"], info["kind"], info["tag"], out)
    return Path(out)


def load_merged(source, **kwargs):
    """(model, tokenizer, info) with LoRA merged, in memory (see ``lisa.export.sources``)."""
    from .sources import load_merged as _load

    return _load(source, **kwargs)


def save_model(model, tokenizer, save_path, format: str = "native", **kwargs) -> Path:
    """Write an in-memory model in one of :data:`FORMATS` (no LoRA merging, no casting)."""
    from ..checkpoint.saver import save_pretrained
    from .llava_formats import save_llava, save_llava_hf

    writers = {"llava": save_llava, "llava-hf": save_llava_hf}
    if format in writers:
        return Path(writers[format](model, tokenizer, save_path, **kwargs))
    return Path(save_pretrained(model, tokenizer, save_path, format=format, **kwargs))


__all__ = ["export", "load_merged", "cast_like_release", "save_model", "FORMATS"]
