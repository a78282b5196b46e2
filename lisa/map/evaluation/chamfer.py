"""Pair scores of the Chamfer AP: minus the symmetric mean Chamfer distance, behind a buffer gate.

Both lines are resampled to ``EVAL_POINTS`` points first. A pair is scored only where the two lines'
2 m buffers (flat caps, mitre joins) intersect; other pairs get ``NO_MATCH``. A collapsed line (all points
equal) has an empty buffer, so it matches nothing.
"""

from __future__ import annotations

import numpy as np
import shapely

BUFFER = 2.0  # metres
NO_MATCH = -100.0


def buffers(lines: np.ndarray) -> np.ndarray:
    """Flat-capped, mitre-joined buffers of ``[B, N, 2]`` lines, as a shapely array."""
    if len(lines) == 0:
        return np.zeros(0, dtype=object)
    return shapely.buffer(shapely.linestrings(lines), BUFFER, cap_style="flat", join_style="mitre")


def gate(pred_buf: np.ndarray, gt_buf: np.ndarray, pi: np.ndarray, gi: np.ndarray) -> np.ndarray:
    """Which pairs ``(pred_buf[pi[k]], gt_buf[gi[k]])`` intersect: a bounding-box test, then GEOS."""
    if len(pi) == 0:
        return np.zeros(0, dtype=bool)
    pb, gb = shapely.bounds(pred_buf), shapely.bounds(gt_buf)  # empty buffers give NaN: never overlap
    p, g = pb[pi], gb[gi]
    near = (p[:, 0] <= g[:, 2]) & (g[:, 0] <= p[:, 2]) & (p[:, 1] <= g[:, 3]) & (g[:, 1] <= p[:, 3])
    out = np.zeros(len(pi), dtype=bool)
    if near.any():
        shapely.prepare(gt_buf)
        out[near] = shapely.intersects(gt_buf[gi[near]], pred_buf[pi[near]])
    return out


def chamfer_scores(pred: np.ndarray, gt: np.ndarray, pi: np.ndarray, gi: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``-(mean_pred min_gt d + mean_gt min_pred d) / 2`` for the pairs ``(pred[pi[k]], gt[gi[k]])``."""
    out = np.empty(len(pi), dtype=np.float64)
    for lo in range(0, len(pi), chunk):
        a, b = pred[pi[lo:lo + chunk]], gt[gi[lo:lo + chunk]]
        d2 = ((a[:, :, None, 0] - b[:, None, :, 0]) ** 2 + (a[:, :, None, 1] - b[:, None, :, 1]) ** 2)
        a_to_b = np.sqrt(d2.min(axis=2)).mean(axis=1)
        b_to_a = np.sqrt(d2.min(axis=1)).mean(axis=1)
        out[lo:lo + chunk] = -(a_to_b + b_to_a) / 2
    return out


def pair_scores(pred: np.ndarray, gt: np.ndarray, pi: np.ndarray, gi: np.ndarray) -> np.ndarray:
    """Scores of the pairs ``(pred[pi[k]], gt[gi[k]])``: Chamfer where the buffers meet, else ``NO_MATCH``."""
    scores = np.full(len(pi), NO_MATCH)
    ok = gate(buffers(pred), buffers(gt), pi, gi)
    if ok.any():
        scores[ok] = chamfer_scores(pred, gt, pi[ok], gi[ok])
    return scores
