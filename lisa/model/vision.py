"""CLIP vision tower (LLaVA feature selection) and the multimodal projector."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel


class VisionTower(nn.Module):
    """Frozen CLIP vision model returning the features of ``select_layer`` (LLaVA: -2, no CLS)."""

    def __init__(self, config: CLIPVisionConfig | dict, select_layer: int = -2, select_feature: str = "patch"):
        super().__init__()
        if isinstance(config, dict):
            config = CLIPVisionConfig(**{k: v for k, v in config.items() if k != "model_type"})
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(f"mm_vision_select_feature must be 'patch' or 'cls_patch', got {select_feature!r}")
        self.vision_tower = CLIPVisionModel(config)
        self.select_layer = select_layer
        self.select_feature = select_feature

    @property
    def config(self) -> CLIPVisionConfig:
        return self.vision_tower.config

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # No autograd through CLIP (frozen in LLaVA / LISA) unless some of it is being trained.
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.vision_tower.parameters())
        dtype = next(self.vision_tower.parameters()).dtype
        with torch.set_grad_enabled(grad):
            out = self.vision_tower(pixel_values.to(dtype), output_hidden_states=True)
        feats = out.hidden_states[self.select_layer]
        if self.select_feature == "patch":
            feats = feats[:, 1:]
        return feats


def build_projector(projector_type: str, mm_hidden_size: int, hidden_size: int) -> nn.Module:
    if projector_type == "linear":
        return nn.Linear(mm_hidden_size, hidden_size)
    if projector_type == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(mm_hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
    raise ValueError(f"unknown mm_projector_type {projector_type!r} (expected 'linear' or 'mlp2x_gelu')")
