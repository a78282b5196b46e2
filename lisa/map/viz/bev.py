"""Drawing map vectors: a bird's-eye view of the range (one colour per class) beside the cameras.

The BEV shows the LiDAR frame with x to the right and y (forward) up, the range box in grey and the
sensor as a small triangle. GT lines are drawn in the class colour; with predictions, GT is drawn wide
and pale underneath and predictions (at or above ``score_threshold``) thin and dark with their points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from lisa.map import spec

CLASS_COLOURS = {"divider": (230, 140, 0), "ped_crossing": (30, 90, 230), "boundary": (20, 160, 40)}
SCALE = 12  # pixels per metre
MARGIN = 24


def _pale(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(c + (255 - c) * 0.6) for c in colour)


def draw_bev(gt: Sequence[tuple[str, np.ndarray]], predictions: Sequence[tuple[str, np.ndarray, float]] | None = None,
             score_threshold: float = 0.3, scale: int = SCALE) -> Image.Image:
    """BEV picture of GT vectors (and predictions) in metres, LiDAR frame."""
    x0, y0, x1, y1 = spec.RANGE
    w, h = int((x1 - x0) * scale) + 2 * MARGIN, int((y1 - y0) * scale) + 2 * MARGIN + 16
    img = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(img)

    def px(pts: np.ndarray) -> list[tuple[float, float]]:
        p = np.asarray(pts, dtype=np.float64)
        return [(MARGIN + (x - x0) * scale, 16 + MARGIN + (y1 - y) * scale) for x, y in p]

    d.rectangle([MARGIN, 16 + MARGIN, w - MARGIN, h - MARGIN], outline=(150, 150, 150), width=1)
    d.polygon(px(np.array([[0.0, 1.2], [-0.6, -0.6], [0.6, -0.6]])), fill=(60, 60, 60))
    for cls, pts in gt:
        colour = _pale(CLASS_COLOURS[cls]) if predictions is not None else CLASS_COLOURS[cls]
        d.line(px(pts), fill=colour, width=6 if predictions is not None else 3, joint="curve")
    for cls, pts, score in predictions or ():
        if score < score_threshold:
            continue
        d.line(px(pts), fill=tuple(int(c * 0.7) for c in CLASS_COLOURS[cls]), width=2)
        for x, y in px(pts):
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=tuple(int(c * 0.7) for c in CLASS_COLOURS[cls]))
    x = 4
    for cls, colour in CLASS_COLOURS.items():
        d.rectangle([x, 4, x + 10, 14], fill=colour)
        d.text((x + 14, 3), cls, fill=(0, 0, 0))
        x += 14 + 8 * len(cls) + 10
    return img


def beside(bev: Image.Image, cameras: Sequence[Image.Image], titles: Sequence[str] = ()) -> Image.Image:
    """The BEV with camera images (each as wide as twice the BEV) stacked on its left, titled."""
    if not cameras:
        return bev
    width = 2 * bev.width
    scaled = [c.convert("RGB").resize((width, max(1, round(c.height * width / c.width)))) for c in cameras]
    out = Image.new("RGB", (width + bev.width, max(bev.height, sum(c.height for c in scaled))), (255, 255, 255))
    d = ImageDraw.Draw(out)
    y = 0
    for k, cam in enumerate(scaled):
        out.paste(cam, (0, y))
        if k < len(titles):
            d.text((6, y + 4), titles[k], fill=(255, 255, 255))
        y += cam.height
    out.paste(bev, (width, 0))
    return out
