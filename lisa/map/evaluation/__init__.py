"""Chamfer-distance AP of vectorized map predictions (MapTR's protocol).

Public API:

- ``evaluate(gts, predictions) -> dict``: ``gts`` maps sample tokens to ``[(class name, points [N, 2])]``
  (raw GT polylines, metres, LiDAR frame), ``predictions`` to ``[(class name, points [N, 2], confidence)]``.
  Returns ``{"ap": {class: {"0.5", "1.0", "1.5"}}, "class_ap", "mAP", "mAP_all_classes", "num_gt",
  "num_pred", "num_samples"}``.
- ``gt_vectors(cache_samples)``: the ``gts`` argument from :class:`lisa.map.gt.SampleGT` objects.
- ``read_predictions(path)``, ``read_gt_vectors(path)``: the files ``lisa map eval`` reads.
"""

from lisa.map.evaluation.ap import GTVector, PredVector, evaluate
from lisa.map.evaluation.io import read_gt_vectors, read_predictions


def gt_vectors(samples) -> dict[str, list[GTVector]]:
    """``{token: [(class name, raw points)]}`` of GT cache samples (:class:`lisa.map.gt.SampleGT`)."""
    from lisa.map.spec import CLASSES

    return {s.token: [(CLASSES[int(lab)], r) for lab, r in zip(s.labels, s.raw)] for s in samples}


__all__ = ["GTVector", "PredVector", "evaluate", "gt_vectors", "read_gt_vectors", "read_predictions"]
