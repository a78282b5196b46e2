"""Vision towers (LLaVA feature selection: CLIP, or SigLIP) and the multimodal projector."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from ..preprocess import VisionInput
from .vision_siglip import build_siglip, is_siglip


def vision_kind(config: dict | None) -> str:
    """"siglip" or "clip" (the default, also for configs written before SigLIP was supported)."""
    return "siglip" if config is not None and is_siglip(config) else "clip"


def vision_input(config: dict | None, aspect: str | None = None) -> VisionInput:
    """How images are prepared for the tower of ``config`` (its image size, its processor, padding)."""
    size = int((config or {}).get("image_size", 224))
    return VisionInput(size, vision_kind(config), pad=aspect == "pad")


class VisionTower(nn.Module):
    """Frozen vision model returning the features of ``select_layer`` (LLaVA: -2, no CLS)."""

    def __init__(self, config: CLIPVisionConfig | dict, select_layer: int = -2, select_feature: str = "patch"):
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(f"mm_vision_select_feature must be 'patch' or 'cls_patch', got {select_feature!r}")
        if isinstance(config, dict) and is_siglip(config):
            if select_feature != "patch":
                raise ValueError("a SigLIP vision tower has no CLS token: mm_vision_select_feature must be 'patch'")
            self.vision_tower = build_siglip(config)
            self.has_cls = False
        else:
            if isinstance(config, dict):
                config = CLIPVisionConfig(**{k: v for k, v in config.items() if k != "model_type"})
            self.vision_tower = CLIPVisionModel(config)
            self.has_cls = True
        self.select_layer = select_layer
        self.select_feature = select_feature

    @property
    def config(self):
        return self.vision_tower.config

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # No autograd through the tower (frozen in LLaVA / LISA) unless some of it is being trained.
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.vision_tower.parameters())
        dtype = next(self.vision_tower.parameters()).dtype
        with torch.set_grad_enabled(grad):
            out = self.vision_tower(pixel_values.to(dtype), output_hidden_states=True)
        feats = out.hidden_states[self.select_layer]
        if self.select_feature == "patch" and self.has_cls:
            feats = feats[:, 1:]
        return feats


def build_projector(projector_type: str, mm_hidden_size: int, hidden_size: int) -> nn.Module:
    if projector_type == "linear":
        return nn.Linear(mm_hidden_size, hidden_size)
    if projector_type == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(mm_hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
    raise ValueError(f"unknown mm_projector_type {projector_type!r} (expected 'linear' or 'mlp2x_gelu')")
