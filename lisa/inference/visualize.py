"""Mask files and overlays as the original chat.py writes them, for every mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = [(255, 0, 0), (0, 200, 0), (0, 90, 255), (255, 200, 0), (200, 0, 255), (0, 220, 220),
           (255, 120, 0), (120, 60, 0)]


def masked_image(image: np.ndarray, mask: np.ndarray, color=(255, 0, 0)) -> np.ndarray:
    out = image.astype(np.float32).copy()
    out[mask] = out[mask] * 0.5 + np.asarray(color, np.float32) * 0.5
    return out.astype(np.uint8)


def overlay_all(image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Every mask in a distinct colour on one image."""
    out = image.copy()
    for i, m in enumerate(masks):
        out = masked_image(out, m, PALETTE[i % len(PALETTE)])
    return out


def save_masks(image: np.ndarray, masks: list[np.ndarray], out_dir, stem: str) -> list[str]:
    """``<stem>_mask_<i>.jpg`` (mask * 100, grey) and ``<stem>_masked_img_<i>.jpg`` for every mask."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, m in enumerate(masks):
        mask_path = out_dir / f"{stem}_mask_{i}.jpg"
        Image.fromarray((m.astype(np.uint8) * 100)).save(mask_path)
        img_path = out_dir / f"{stem}_masked_img_{i}.jpg"
        Image.fromarray(masked_image(image, m)).save(img_path)
        written += [str(mask_path), str(img_path)]
    return written
