"""Building the map detector from its sources: CLIP, the LLM and the tokenizer from their folders (or
random from the preset's configs), the Q-Former from a BLIP-2 folder or random.

``build_map_detector(llm_path=..., freeze_llm=True, qformer_pretrained="blip2"|path|"none",
preset="7b"|"tiny")`` is the entry point users know.
"""

from __future__ import annotations

import logging

import torch

from ...model.vision import VisionTower
from ..model.config import MapDetectorConfig, preset_config
from ..model.detector import MapDetector
from ..model.losses import LossWeights
from .sources import build_llm_from_config, load_llm, load_text_tokenizer, load_vision

log = logging.getLogger("lisa.map")


def build_from_config(config: MapDetectorConfig, *, freeze_llm: bool = True, dtype: torch.dtype | None = None,
                      loss_weights: LossWeights | None = None, load_qformer: bool = True,
                      seed: int | None = None) -> MapDetector:
    """The detector described by ``config``. Frozen parts come from their folders (or random from
    their configs), in ``dtype`` when given; trained parts are float32. ``seed`` fixes the random ones."""
    from transformers import CLIPVisionConfig

    if seed is not None:
        torch.manual_seed(seed)
    if config.vision_path:
        clip = load_vision(config.vision_path, dtype)
        config.vision = {k: v for k, v in clip.config.to_dict().items()
                         if k not in ("transformers_version", "architectures", "_name_or_path")}
    vision = VisionTower(CLIPVisionConfig(**{k: v for k, v in config.vision.items() if k != "model_type"}),
                         select_layer=config.select_layer)
    if config.vision_path:
        vision.vision_tower = clip
    llm = load_llm(config.llm_path, dtype) if config.llm_path else build_llm_from_config(config.llm, dtype)
    if dtype is not None and not config.vision_path:
        vision.to(dtype)
    blip2 = None
    if load_qformer and config.qformer_pretrained not in (None, "", "none"):
        from .blip2 import load_blip2_qformer

        blip2 = load_blip2_qformer(config.qformer_pretrained)
        config.qformer = {**blip2.config}
        config.num_query_tokens = int(blip2.query_tokens.shape[1])
    tokenizer = load_text_tokenizer(config.tokenizer, config.llm_path)
    if config.llm_lora:
        from ..model.stages import wrap_lora

        llm = wrap_lora(llm, config.llm_lora)
    model = MapDetector(config, vision, llm, tokenizer, loss_weights)
    if blip2 is not None:
        model.qformer.load_blip2(blip2.state, blip2.query_tokens)
        log.info("Q-Former and %d query tokens from %s", config.num_query_tokens, blip2.folder)
    model.freeze(llm=freeze_llm)
    return model


def build_map_detector(llm_path: str | None = None, freeze_llm: bool = True, qformer_pretrained: str | None = None,
                       preset: str = "7b", *, vision_path: str | None = None, dtype: torch.dtype | None = None,
                       loss_weights: LossWeights | None = None, seed: int | None = None, **overrides) -> MapDetector:
    """The map detector of a preset (``tiny`` or ``7b``), with its LLM / BLIP-2 / CLIP sources
    overridden where given. ``qformer_pretrained``: ``"blip2"``, a BLIP-2 folder, or ``"none"``."""
    config = preset_config(preset, llm_path=llm_path, qformer_pretrained=qformer_pretrained,
                           vision_path=vision_path, **overrides)
    return build_from_config(config, freeze_llm=freeze_llm, dtype=dtype, loss_weights=loss_weights, seed=seed)
