"""A sample's predicted map over its GT, beside its front and back cameras (``lisa map predict``, the
map demo), drawn as ``lisa map show`` draws GT."""

from __future__ import annotations

from pathlib import Path

from .. import spec
from .bev import beside, draw_bev

SHOWN = ("CAM_FRONT", "CAM_BACK")


def prediction_picture(dataroot, gt, predictions, score_threshold: float = 0.3, title: str = "prediction"):
    """``gt``: a ``SampleGT`` (raw GT vectors, camera paths); ``predictions``: ``[(class name, points
    [N, 2] metres, confidence)]``."""
    from PIL import Image

    vectors = [(spec.CLASSES[int(c)], r) for c, r in zip(gt.labels, gt.raw)]
    shown = [c for c in gt.cameras if c.channel in SHOWN and (Path(dataroot) / c.path).is_file()]
    images = [Image.open(Path(dataroot) / c.path) for c in shown]
    titles = [f"{gt.scene}  {gt.token[:8]}  {c.channel}  {title}" for c in shown]
    return beside(draw_bev(vectors, predictions, score_threshold), images, titles)
