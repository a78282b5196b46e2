"""``CameraQFormer``: each camera's CLIP patch features -> a few query tokens that know their camera.

BLIP-2's Q-Former (transformers' ``Blip2QFormerModel``) cross-attends from learned query tokens to
the image features. One learned camera embedding per view is added to the query tokens before the
Q-Former runs, so every output token carries which camera it came from (the LLM and the map decoder
see all six views as one sequence). When the vision tower's width differs from the width the
Q-Former's cross-attention expects (CLIP-L: 1024, BLIP-2's EVA ViT-g: 1408), a trainable
LayerNorm + Linear adapter maps one to the other, so a pretrained BLIP-2 Q-Former is kept whole.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel


class CameraQFormer(nn.Module):
    def __init__(self, qformer: dict, num_query_tokens: int, num_cameras: int, vision_width: int):
        super().__init__()
        config = Blip2QFormerConfig(**{k: v for k, v in qformer.items() if k != "model_type"})
        self.config = config
        self.qformer = Blip2QFormerModel(config)
        width = config.hidden_size
        self.query_tokens = nn.Parameter(torch.randn(1, num_query_tokens, width) * config.initializer_range)
        self.camera_embed = nn.Embedding(num_cameras, width)
        nn.init.normal_(self.camera_embed.weight, std=config.initializer_range)
        self.vision_norm = nn.LayerNorm(vision_width)
        self.vision_adapter = (nn.Identity() if vision_width == config.encoder_hidden_size
                               else nn.Linear(vision_width, config.encoder_hidden_size))

    @property
    def num_query_tokens(self) -> int:
        return self.query_tokens.shape[1]

    @property
    def width(self) -> int:
        return self.config.hidden_size

    def load_blip2(self, state: dict[str, torch.Tensor], query_tokens: torch.Tensor) -> None:
        """Copy a BLIP-2 Q-Former (``Blip2QFormerModel`` names) and its query tokens in; strict."""
        missing, unexpected = self.qformer.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"BLIP-2 Q-Former keys do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
        if query_tokens.shape != self.query_tokens.shape:
            raise ValueError(f"BLIP-2 query_tokens {tuple(query_tokens.shape)} != {tuple(self.query_tokens.shape)}")
        with torch.no_grad():
            self.query_tokens.copy_(query_tokens)

    def forward(self, features: torch.Tensor, num_cameras: int) -> torch.Tensor:
        """``features [B * V, P, C]`` (camera-major within each sample) -> ``[B, V * Q, width]``."""
        bv = features.shape[0]
        if bv % num_cameras:
            raise ValueError(f"{bv} camera images are not a multiple of {num_cameras} cameras")
        enc = self.vision_adapter(self.vision_norm(features.float()))
        cams = torch.arange(num_cameras, device=features.device).repeat(bv // num_cameras)
        queries = self.query_tokens + self.camera_embed(cams)[:, None, :]
        out = self.qformer(query_embeds=queries, encoder_hidden_states=enc).last_hidden_state
        return out.reshape(bv // num_cameras, num_cameras * self.num_query_tokens, self.width)
