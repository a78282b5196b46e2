"""Training targets of one sample: classes, normalised points and every permutation-equivalent order.

The orders come from one index table per kind of instance, built once from ``spec.equivalent_orders``
(so they follow its definition exactly): an open line has 2 orders, a closed ring ``2 * (N - 1)``.
Gathering a sample's points through the table gives ``[instances, MAX_ORDERS, N, 2]`` in one step;
open lines are padded and masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..spec import NUM_POINTS, equivalent_orders, normalize, num_orders


@lru_cache(maxsize=8)
def order_tables(num_points: int = NUM_POINTS) -> tuple[torch.Tensor, torch.Tensor]:
    """``index [2, MAX_ORDERS, N]`` (row 0: open line, row 1: closed ring) and ``mask [2, MAX_ORDERS]``."""
    k_max = num_orders(num_points, closed=True)
    ids = np.stack([np.arange(num_points), np.zeros(num_points)], axis=1)
    index = np.zeros((2, k_max, num_points), dtype=np.int64)
    mask = np.zeros((2, k_max), dtype=bool)
    for row, closed in enumerate((False, True)):
        orders = equivalent_orders(ids, closed)[..., 0].astype(np.int64)
        index[row, : len(orders)] = orders
        mask[row, : len(orders)] = True
    return torch.from_numpy(index), torch.from_numpy(mask)

@dataclass
class MapTargets:
    labels: torch.Tensor  # [N] long, class index
    points: torch.Tensor  # [N, P, 2] normalised, as given
    orders: torch.Tensor  # [N, K, P, 2] normalised, every equivalent order (padded)
    order_mask: torch.Tensor  # [N, K] bool, which orders exist

    def to(self, device) -> MapTargets:
        return MapTargets(*(t.to(device) for t in (self.labels, self.points, self.orders, self.order_mask)))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

def make_targets(labels, points_m, closed) -> MapTargets:
    """``labels [N]``, ``points_m [N, P, 2]`` in metres (LiDAR frame), ``closed [N]`` -> targets."""
    points_m = np.asarray(points_m, dtype=np.float32)
    n = len(np.asarray(labels))
    if n == 0:
        p = NUM_POINTS if points_m.ndim < 2 else points_m.shape[-2]
        k = num_orders(p, True)
        return MapTargets(torch.zeros(0, dtype=torch.long), torch.zeros(0, p, 2), torch.zeros(0, k, p, 2),
                          torch.zeros(0, k, dtype=torch.bool))
    if points_m.ndim != 3 or points_m.shape[0] != n or points_m.shape[2] != 2:
        raise ValueError(f"points must have shape [{n}, P, 2], got {points_m.shape}")
    pts = torch.from_numpy(normalize(points_m))
    closed_t = torch.as_tensor(np.asarray(closed, dtype=bool))
    index, mask = order_tables(pts.shape[1])
    kind = closed_t.long()  # 0 open, 1 closed
    orders = pts[torch.arange(n)[:, None, None], index[kind]]  # [N, K, P, 2]
    return MapTargets(torch.as_tensor(np.asarray(labels), dtype=torch.long), pts, orders, mask[kind].clone())
