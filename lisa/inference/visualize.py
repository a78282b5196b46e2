"""Mask overlays that show on any picture, and the mask files the original chat.py writes.

A translucent fill alone disappears when the mask lies on an object of its own colour (a red mask
on a red circle shows nothing). So every mask is also outlined, inside its own border, by a black
band and a white band next to it: whatever colour a pixel has, one of the two differs from it by at
least half the 0-255 range in some channel. Fill colours follow the answer's ``[SEG]`` order, and
nothing outside a mask is changed.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

PALETTE = [(255, 0, 0), (0, 200, 0), (0, 90, 255), (255, 200, 0), (200, 0, 255), (0, 220, 220),
           (255, 120, 0), (120, 60, 0)]
FILL_ALPHA = 0.45
DARK, LIGHT = (0, 0, 0), (255, 255, 255)
DISPLAY_MIN_SIDE = 384  # small pictures are enlarged to this for viewing (demo examples)
GAP = 8  # white pixels between the original and the overlay


def mask_colour(index: int) -> tuple[int, int, int]:
    """The colour of the ``index``-th mask of an answer (0 for its first ``[SEG]``)."""
    return PALETTE[index % len(PALETTE)]


def band_width(height: int, width: int) -> int:
    """Width in pixels of each of the two outline bands: thin, yet visible on large pictures."""
    return max(1, round(min(height, width) / 150))


def enlarge(image: np.ndarray, min_side: int = DISPLAY_MIN_SIDE) -> tuple[np.ndarray, int]:
    """``image`` (or a mask) repeated by a whole factor so its shorter side reaches ``min_side``
    (nearest neighbour: edges stay sharp, no colour is invented); returns it and the factor."""
    factor = max(1, -(-min_side // max(1, min(image.shape[:2]))))
    if factor == 1:
        return image, 1
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1), factor


def _erode(mask: np.ndarray, width: int) -> np.ndarray:
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)  # every pixel within ``width`` (8-neighbour)
    return cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def overlay_masks(image: np.ndarray, masks: list[np.ndarray], first: int = 0, alpha: float = FILL_ALPHA,
                  min_side: int = 0) -> np.ndarray:
    """``image`` [H, W, 3] uint8 with every mask filled in its colour and outlined; ``first`` is the
    ``[SEG]`` index of ``masks[0]`` (for the colours). With ``min_side``, image and masks are first
    enlarged for viewing (:func:`enlarge`). A pixel covered by several masks takes the first one's
    fill, so identical masks do not blend into a new colour."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"overlay: expected an RGB image [H, W, 3], got shape {tuple(image.shape)}")
    if min_side:
        image, factor = enlarge(image, min_side)
        masks = [np.repeat(np.repeat(m, factor, axis=0), factor, axis=1) for m in masks]
    out = image.astype(np.float32)
    t = band_width(*image.shape[:2])
    painted = np.zeros(image.shape[:2], dtype=bool)
    rings = []
    for i, m in enumerate(masks):
        m = np.asarray(m, dtype=bool)
        if m.shape != image.shape[:2]:
            raise ValueError(f"overlay: mask {i} has shape {m.shape}, the image {image.shape[:2]}")
        inner = _erode(m, t)
        core = _erode(inner, t)
        on = core & ~painted
        out[on] = (1 - alpha) * out[on] + alpha * np.asarray(mask_colour(first + i), np.float32)
        painted |= m
        rings.append((m & ~inner, inner & ~core))
    # outlines last, so that no fill hides another mask's border
    for dark, light in rings:
        out[dark] = DARK
        out[light] = LIGHT
    return out.round().clip(0, 255).astype(np.uint8)


def overlay_all(image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Every mask of an answer on one image, at the image's size."""
    return overlay_masks(image, masks) if masks else image.copy()


def beside(original: np.ndarray, overlay: np.ndarray, max_width: int = 2048) -> np.ndarray:
    """The original and the overlay side by side when both fit in ``max_width``, else the overlay."""
    if original.shape != overlay.shape or 2 * original.shape[1] + GAP > max_width:
        return overlay
    gap = np.full((original.shape[0], GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([original, gap, overlay], axis=1)


def picture(image: np.ndarray, masks: list[np.ndarray], min_side: int = DISPLAY_MIN_SIDE) -> np.ndarray:
    """A picture to look at: enlarged if small, the original beside the overlay where there is room."""
    return beside(enlarge(image, min_side)[0], overlay_masks(image, masks, min_side=min_side))


def save_masks(image: np.ndarray, masks: list[np.ndarray], out_dir, stem: str) -> list[str]:
    """``<stem>_mask_<i>.jpg`` (mask * 100, grey) and ``<stem>_masked_img_<i>.jpg`` (that mask in the
    colour of its ``[SEG]``) for every mask."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, m in enumerate(masks):
        mask_path = out_dir / f"{stem}_mask_{i}.jpg"
        Image.fromarray((m.astype(np.uint8) * 100)).save(mask_path)
        img_path = out_dir / f"{stem}_masked_img_{i}.jpg"
        Image.fromarray(overlay_masks(image, [m], first=i)).save(img_path)
        written += [str(mask_path), str(img_path)]
    return written
