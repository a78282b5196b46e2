"""SigLIP vision towers (transformers ``SiglipVisionModel``), as LLaVA variants use them.

A SigLIP tower has no CLS token: every output token is an image patch, so LLaVA's "patch"
feature selection keeps all of them (a CLIP tower drops its first token). Its image processor
resizes the whole image to a square (no crop) and normalises with mean = std = 0.5.
"""

from __future__ import annotations

from transformers import SiglipVisionConfig, SiglipVisionModel

SIGLIP_TYPES = ("siglip_vision_model", "siglip")


def is_siglip(config: dict | object) -> bool:
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    return model_type in SIGLIP_TYPES


def siglip_config(config: dict | SiglipVisionConfig) -> SiglipVisionConfig:
    """A ``SiglipVisionConfig`` from its dict, or from a full SigLIP config's ``vision_config``."""
    if isinstance(config, SiglipVisionConfig):
        return config
    data = dict(config)
    if data.get("model_type") == "siglip":
        data = dict(data.get("vision_config") or {})
    data.pop("model_type", None)
    return SiglipVisionConfig(**data)


def build_siglip(config: dict | SiglipVisionConfig) -> SiglipVisionModel:
    return SiglipVisionModel(siglip_config(config))
