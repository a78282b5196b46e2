"""Pair scores of the Chamfer AP: minus the symmetric mean Chamfer distance, behind a buffer gate.

Both lines are resampled to ``EVAL_POINTS`` points first. A pair is scored only where the two lines'
2 m buffers (flat caps, mitre joins) intersect; other pairs get ``NO_MATCH``. A collapsed line (all points
equal) has an empty buffer, so it matches nothing.

Buffers are the expensive part, so ``pair_scores(..., within=d)`` gates only the pairs whose Chamfer
distance is at most ``d`` (and skips the Chamfer distance of pairs whose boxes are more than ``d`` apart,
which bounds it from below) and reports every other pair as ``NO_MATCH``. With ``d`` the largest AP
threshold this changes no AP: such a pair can never pass a threshold, and it can only be a prediction's
best pair when none of its pairs passes, which makes the prediction a false positive either way.
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


def gate(pred: np.ndarray, gt: np.ndarray, pi: np.ndarray, gi: np.ndarray) -> np.ndarray:
    """Which pairs ``(pred[pi[k]], gt[gi[k]])`` have intersecting buffers (buffers built only for the lines
    that take part; a bounding-box test first, then GEOS)."""
    out = np.zeros(len(pi), dtype=bool)
    if len(pi) == 0:
        return out
    pu, p_of = np.unique(pi, return_inverse=True)
    gu, g_of = np.unique(gi, return_inverse=True)
    pb, gb = buffers(pred[pu]), buffers(gt[gu])
    pbox, gbox = shapely.bounds(pb)[p_of], shapely.bounds(gb)[g_of]  # empty buffers: NaN, never overlap
    near = ((pbox[:, 0] <= gbox[:, 2]) & (gbox[:, 0] <= pbox[:, 2])
            & (pbox[:, 1] <= gbox[:, 3]) & (gbox[:, 1] <= pbox[:, 3]))
    if near.any():
        shapely.prepare(gb)
        out[near] = shapely.intersects(gb[g_of[near]], pb[p_of[near]])
    return out


def chamfer_distances(pred: np.ndarray, gt: np.ndarray, pi: np.ndarray, gi: np.ndarray,
                      chunk: int = 256) -> np.ndarray:
    """``(mean_pred min_gt d + mean_gt min_pred d) / 2`` for the pairs ``(pred[pi[k]], gt[gi[k]])``."""
    out = np.empty(len(pi), dtype=np.float64)
    for lo in range(0, len(pi), chunk):
        a, b = pred[pi[lo:lo + chunk]], gt[gi[lo:lo + chunk]]
        d2 = (a[:, :, None, 0] - b[:, None, :, 0]) ** 2 + (a[:, :, None, 1] - b[:, None, :, 1]) ** 2
        out[lo:lo + chunk] = (np.sqrt(d2.min(axis=2)).mean(axis=1) + np.sqrt(d2.min(axis=1)).mean(axis=1)) / 2
    return out


def pair_scores(pred: np.ndarray, gt: np.ndarray, pi: np.ndarray, gi: np.ndarray,
                within: float | None = None) -> np.ndarray:
    """Scores of the pairs ``(pred[pi[k]], gt[gi[k]])``: minus the Chamfer distance where the buffers meet,
    else ``NO_MATCH``; with ``within``, pairs farther apart than that are ``NO_MATCH`` too (see above)."""
    scores = np.full(len(pi), NO_MATCH)
    todo = np.arange(len(pi))
    if within is not None and len(pi):
        lo_p, hi_p = pred.min(axis=1), pred.max(axis=1)
        lo_g, hi_g = gt.min(axis=1), gt.max(axis=1)
        gap = np.maximum(lo_p[pi] - hi_g[gi], lo_g[gi] - hi_p[pi]).max(axis=1)  # a lower bound of every distance
        todo = todo[gap <= within]
    dist = chamfer_distances(pred, gt, pi[todo], gi[todo])
    if within is not None:
        todo, dist = todo[dist <= within], dist[dist <= within]
    ok = gate(pred, gt, pi[todo], gi[todo])
    scores[todo[ok]] = -dist[ok]
    return scores
