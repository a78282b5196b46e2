"""Facts shared by the map ground truth, the evaluator and the map detector.

The perception range is the box around the LiDAR sensor, in its own frame (x to the right, y
forward): 30 m across and 60 m along. Instances are polylines of ``NUM_POINTS`` points; the detector
predicts them normalised to [0, 1] over that box. A closed ring repeats its first point at the end.
"""

from __future__ import annotations

import numpy as np

CLASSES: tuple[str, ...] = ("divider", "ped_crossing", "boundary")
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

# (x_min, y_min, x_max, y_max) in metres, LiDAR frame.
RANGE: tuple[float, float, float, float] = (-15.0, -30.0, 15.0, 30.0)
PATCH_SIZE: tuple[float, float] = (RANGE[3] - RANGE[1], RANGE[2] - RANGE[0])  # (along y, across x)

NUM_POINTS = 20  # points per instance, for training targets and predictions
NUM_QUERIES = 50  # predicted instances per sample
EVAL_POINTS = 100  # points per instance inside the Chamfer evaluation
THRESHOLDS: tuple[float, ...] = (0.5, 1.0, 1.5)  # Chamfer distance thresholds of the AP, metres


def normalize(points: np.ndarray) -> np.ndarray:
    """Metres in the LiDAR frame -> [0, 1] over the range (any leading shape, last axis x, y)."""
    lo = np.asarray(RANGE[:2], dtype=np.float64)
    hi = np.asarray(RANGE[2:], dtype=np.float64)
    return ((np.asarray(points, dtype=np.float64) - lo) / (hi - lo)).astype(np.float32)


def denormalize(points: np.ndarray) -> np.ndarray:
    """[0, 1] over the range -> metres in the LiDAR frame."""
    lo = np.asarray(RANGE[:2], dtype=np.float64)
    hi = np.asarray(RANGE[2:], dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) * (hi - lo) + lo).astype(np.float32)


def resample(points: np.ndarray, num: int) -> np.ndarray:
    """``num`` points evenly spaced along the polyline's length (first and last points kept).

    A polyline of zero length (all points equal) gives ``num`` copies of its point.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 1:
        raise ValueError(f"a polyline needs shape [N>=1, 2], got {pts.shape}")
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    along = np.concatenate([[0.0], np.cumsum(seg)])
    if along[-1] <= 0:
        return np.repeat(pts[:1], num, axis=0)
    targets = np.linspace(0.0, along[-1], num)
    x = np.interp(targets, along, pts[:, 0])
    y = np.interp(targets, along, pts[:, 1])
    return np.stack([x, y], axis=1)


def clamp_to_range(points: np.ndarray) -> np.ndarray:
    return np.clip(points, RANGE[:2], RANGE[2:])


def num_orders(num_points: int, closed: bool) -> int:
    """How many point orders describe the same instance: 2 for an open line (both directions), every
    cyclic shift in both directions for a closed ring (its last point repeats the first)."""
    return 2 * (num_points - 1) if closed else 2


def equivalent_orders(points: np.ndarray, closed: bool) -> np.ndarray:
    """All point orders of one instance that describe the same geometry, ``[K, N, 2]``.

    An open line reads forward and backward. A closed ring (``points[0] == points[-1]``) may start at
    any of its ``N - 1`` distinct vertices and run either way; every order stays closed. The first
    order is the input itself.
    """
    pts = np.asarray(points)
    if not closed:
        return np.stack([pts, pts[::-1]])
    core = pts[:-1]
    n = len(core)
    orders = []
    for ring in (core, core[::-1]):
        for k in range(n):
            shifted = np.roll(ring, -k, axis=0)
            orders.append(np.concatenate([shifted, shifted[:1]], axis=0))
    return np.stack(orders)


MAX_ORDERS = num_orders(NUM_POINTS, closed=True)


def resample_lines(lines: list[np.ndarray], num: int) -> np.ndarray:
    """``resample`` for many polylines at once, ``[B, num, 2]`` (float64), vectorised per point count.

    Same result as ``resample`` on each line (to rounding); first and last points are kept exactly.
    """
    out = np.zeros((len(lines), num, 2), dtype=np.float64)
    by_count: dict[int, list[int]] = {}
    for i, line in enumerate(lines):
        by_count.setdefault(len(line), []).append(i)
    frac_grid = np.linspace(0.0, 1.0, num)
    for n, idx in by_count.items():
        if n < 1:
            raise ValueError("a polyline needs at least one point")
        group = np.asarray([lines[i] for i in idx], dtype=np.float64).reshape(len(idx), n, 2)
        if n == 1:
            out[idx] = group[:, :1]
            continue
        step = max(1, int(2e7 // (num * n)))  # bounds the [b, num, n] comparison below
        for lo in range(0, len(idx), step):
            pts = group[lo:lo + step]
            seg = np.linalg.norm(np.diff(pts, axis=1), axis=2)
            along = np.concatenate([np.zeros((len(pts), 1)), np.cumsum(seg, axis=1)], axis=1)
            t = along[:, -1:] * frac_grid
            j = np.clip((along[:, None, :] <= t[:, :, None]).sum(-1) - 1, 0, n - 2)
            seg_j = np.take_along_axis(seg, j, axis=1)
            frac = np.divide(t - np.take_along_axis(along, j, axis=1), seg_j, out=np.zeros_like(t), where=seg_j > 0)
            a = np.take_along_axis(pts, j[..., None], axis=1)
            b = np.take_along_axis(pts, j[..., None] + 1, axis=1)
            res = a + frac[..., None] * (b - a)
            res[:, 0], res[:, -1] = pts[:, 0], pts[:, -1]
            out[idx[lo:lo + step]] = res
    return out
