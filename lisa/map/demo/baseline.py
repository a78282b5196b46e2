"""The trivial baseline the demo's detector must beat: the average GT map of the training set, predicted
unchanged for every sample, whatever its images show.

"Average map" made concrete: per class, the training instances (20 points each, lines read in a
canonical direction: the end with the smaller y first) are clustered with k-means into as many
prototypes as the class has instances per training sample on average (at least 1), times
``per_sample_factor``; each prototype becomes a fixed prediction scored by the share of training
instances in its cluster. Its AP is what knowing the town's typical layout, but not the images, gives.
"""

from __future__ import annotations

import numpy as np

from ..model.decode import MapPrediction
from ..spec import CLASSES, NUM_QUERIES


def canonical(points: np.ndarray, closed: np.ndarray) -> np.ndarray:
    """Open lines reversed where that puts the end with the smaller y (then x) first; rings kept."""
    pts = np.array(points, dtype=np.float64)
    first, last = pts[:, 0], pts[:, -1]
    flip = (~closed) & ((last[:, 1] < first[:, 1]) | ((last[:, 1] == first[:, 1]) & (last[:, 0] < first[:, 0])))
    pts[flip] = pts[flip, ::-1]
    return pts


def average_map(samples, per_sample_factor: float = 2.0, seed: int = 0) -> MapPrediction:
    from scipy.cluster.vq import kmeans2

    labels_out, scores_out, points_out = [], [], []
    n = max(len(samples), 1)
    for c in range(len(CLASSES)):
        pts = [s.points[s.labels == c] for s in samples]
        closed = [s.closed[s.labels == c] for s in samples]
        pts = np.concatenate([p for p in pts if len(p)] or [np.zeros((0, 20, 2))])
        if len(pts) == 0:
            continue
        closed = np.concatenate(closed)
        flat = canonical(pts, closed).reshape(len(pts), -1)
        k = int(min(len(flat), max(1, round(per_sample_factor * len(flat) / n)), NUM_QUERIES))
        centres, assign = kmeans2(flat, k, seed=seed, minit="++")
        counts = np.bincount(assign, minlength=k)
        for j in np.nonzero(counts)[0]:
            labels_out.append(c)
            scores_out.append(counts[j] / len(flat))
            points_out.append(centres[j].reshape(-1, 2))
    order = np.argsort(-np.asarray(scores_out))[:NUM_QUERIES]
    return MapPrediction(np.asarray(labels_out)[order], np.asarray(scores_out)[order],
                         np.asarray(points_out, dtype=np.float32)[order])


def baseline_predictions(train_samples, eval_samples, **kw) -> dict[str, MapPrediction]:
    fixed = average_map(train_samples, **kw)
    return {s.token: fixed for s in eval_samples}
