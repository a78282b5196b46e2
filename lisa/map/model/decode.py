"""Predictions -> map instances in metres, consistent with the softmax head (see ``losses.py``).

Each query yields one instance: its class is the most probable of the 3 real classes and its score
that class's softmax probability (what no-object takes is missing from it). Instances are sorted by
score; ``score_threshold`` and ``top_k`` optionally cut the list (Chamfer AP wants them all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..spec import CLASSES, denormalize


@dataclass
class MapPrediction:
    labels: np.ndarray  # [M] class index
    scores: np.ndarray  # [M]
    points: np.ndarray  # [M, P, 2] metres, LiDAR frame

    def to_vectors(self) -> list[dict]:
        """MapTR results' ``vectors`` entries."""
        return [{"pts": p.tolist(), "pts_num": int(len(p)), "cls_name": CLASSES[int(c)], "type": int(c),
                 "confidence_level": float(s)} for c, s, p in zip(self.labels, self.scores, self.points)]


def decode(pred_logits: torch.Tensor, pred_points: torch.Tensor, score_threshold: float = 0.0,
           top_k: int | None = None) -> list[MapPrediction]:
    probs = pred_logits.detach().float().softmax(-1)[..., :-1]
    scores, labels = probs.max(-1)
    out = []
    for s, c, p in zip(scores.cpu().numpy(), labels.cpu().numpy(), pred_points.detach().float().cpu().numpy()):
        order = np.argsort(-s, kind="stable")
        order = order[s[order] >= score_threshold]
        if top_k is not None:
            order = order[:top_k]
        out.append(MapPrediction(c[order], s[order], denormalize(p[order])))
    return out
