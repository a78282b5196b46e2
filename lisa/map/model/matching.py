"""Hungarian matching of the 50 predicted instances to a sample's GT instances.

Cost of pairing query q with GT g = ``cls_weight`` * focal classification cost of g's class under
q's softmax + ``pts_weight`` * L1 distance (summed over the P x 2 normalised coordinates) between q's
points and g's closest permutation-equivalent order. That closest order is also g's regression
target when q is matched to it, so a reversed line or a ring starting elsewhere costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .targets import MapTargets


def focal_cost(prob: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0, eps: float = 1e-8) -> torch.Tensor:
    """Focal cost of predicting a class with probability ``prob``: the positive focal term minus the
    negative one, so a confident right class costs about ``-log``-small and a wrong one a lot."""
    pos = alpha * (1 - prob).pow(gamma) * -(prob + eps).log()
    neg = (1 - alpha) * prob.pow(gamma) * -(1 - prob + eps).log()
    return pos - neg


def order_l1(points: torch.Tensor, targets: MapTargets) -> tuple[torch.Tensor, torch.Tensor]:
    """``points [Q, P, 2]`` -> (cost [Q, N], best order index [Q, N]) over each GT's valid orders."""
    diff = (points[:, None, None] - targets.orders[None]).abs().sum(dim=(-1, -2))  # [Q, N, K]
    diff = diff.masked_fill(~targets.order_mask[None], float("inf"))
    return diff.min(dim=-1)


@dataclass
class Match:
    queries: torch.Tensor  # [M] long, matched query indices
    gts: torch.Tensor  # [M] long, the GT each is matched to
    orders: torch.Tensor  # [M] long, the GT order used as its target


class HungarianMatcher:
    def __init__(self, cls_weight: float = 2.0, pts_weight: float = 5.0, alpha: float = 0.25, gamma: float = 2.0):
        self.cls_weight, self.pts_weight, self.alpha, self.gamma = cls_weight, pts_weight, alpha, gamma

    @torch.no_grad()
    def cost(self, logits: torch.Tensor, points: torch.Tensor, targets: MapTargets):
        """One sample: ``logits [Q, C + 1]``, ``points [Q, P, 2]`` -> (cost [Q, N], order [Q, N])."""
        prob = logits.float().softmax(-1)[:, targets.labels]  # [Q, N]
        pts_cost, order = order_l1(points.float(), targets)
        return self.cls_weight * focal_cost(prob, self.alpha, self.gamma) + self.pts_weight * pts_cost, order

    @torch.no_grad()
    def __call__(self, pred_logits: torch.Tensor, pred_points: torch.Tensor, targets: list[MapTargets]) -> list[Match]:
        matches = []
        for logits, points, tgt in zip(pred_logits, pred_points, targets):
            if len(tgt) == 0:
                empty = torch.zeros(0, dtype=torch.long, device=logits.device)
                matches.append(Match(empty, empty, empty))
                continue
            cost, order = self.cost(logits, points, tgt)
            q, g = linear_sum_assignment(cost.cpu().numpy())
            q = torch.as_tensor(np.asarray(q), dtype=torch.long, device=logits.device)
            g = torch.as_tensor(np.asarray(g), dtype=torch.long, device=logits.device)
            matches.append(Match(q, g, order[q, g]))
        return matches
