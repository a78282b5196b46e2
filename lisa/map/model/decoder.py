"""``MapDecoder`` (trained from scratch): the LLM's hidden states at the map-query positions -> classes
and points, with cross-attention to the visual tokens.

The LLM is frozen in stage 2, so its hidden states alone would leave the geometry to what a language
model's features keep of the image; a few transformer decoder layers that attend back to the
Q-Former's visual tokens give the queries direct access to where things are. Every layer's output
goes through the same heads, and training supervises all of them (as DETR-style detectors do), which
speeds up learning of the early layers.
"""

from __future__ import annotations

import torch
from torch import nn


class PointsHead(nn.Module):
    """d -> d -> d -> P * 2, sigmoid: points normalised to [0, 1] over the perception range."""

    def __init__(self, dim: int, num_points: int):
        super().__init__()
        self.num_points = num_points
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(),
                                 nn.Linear(dim, num_points * 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).sigmoid().unflatten(-1, (self.num_points, 2))


class MapDecoder(nn.Module):
    def __init__(self, llm_width: int, visual_width: int, num_visual_tokens: int, num_queries: int,
                 num_classes: int, num_points: int, dim: int = 256, layers: int = 3, heads: int = 8,
                 ffn: int = 1024, dropout: float = 0.1):
        super().__init__()
        self.query_in = nn.Sequential(nn.LayerNorm(llm_width), nn.Linear(llm_width, dim))
        self.memory_in = nn.Sequential(nn.LayerNorm(visual_width), nn.Linear(visual_width, dim))
        self.query_pos = nn.Embedding(num_queries, dim)
        self.memory_pos = nn.Embedding(num_visual_tokens, dim)
        self.layers = nn.ModuleList([
            nn.TransformerDecoderLayer(dim, heads, ffn, dropout, batch_first=True, norm_first=True)
            for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.class_head = nn.Linear(dim, num_classes + 1)
        self.points_head = PointsHead(dim, num_points)
        with torch.no_grad():
            # start with most mass on no-object: most of the 50 queries match nothing
            self.class_head.bias.zero_()
            self.class_head.bias[-1] = 2.0

    def forward(self, query_hidden: torch.Tensor, visual: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per decoder layer (last one last): ``{"pred_logits": [B, Q, C + 1], "pred_points": [B, Q, P, 2]}``."""
        x = self.query_in(query_hidden) + self.query_pos.weight
        memory = self.memory_in(visual) + self.memory_pos.weight[: visual.shape[1]]
        outputs = []
        for layer in self.layers:
            x = layer(x, memory)
            h = self.norm(x)
            outputs.append({"pred_logits": self.class_head(h), "pred_points": self.points_head(h)})
        return outputs
