"""The synthetic images of the CLIP preprocessing oracle: ``tests/fixtures/make_oracle.py`` feeds them to
transformers 4.31 to write the goldens, ``tests/test_preprocess.py`` regenerates them to compare.

numpy only: the oracle script imports this from a throwaway venv without torch or lisa."""

from __future__ import annotations

import numpy as np


def synthetic_image(h: int, w: int, seed: int) -> np.ndarray:
    """Reproducible uint8 RGB image: gradients, a sharp-edged block and a hashed-noise band."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    c = np.arange(3, dtype=np.int64)[None, None, :]
    y, x = y[..., None], x[..., None]
    img = (x * (3 + seed) + y * (5 + 2 * seed) + c * 70) % 256
    block = (y > h // 4) & (y < h // 2) & (x > w // 3) & (x < (2 * w) // 3)
    img = np.where(block, 255 - c * 100, img)
    noise = ((x * 73856093) ^ (y * 19349663) ^ (c * 83492791) ^ seed) % 251
    band = (y > (3 * h) // 4) & (y < (3 * h) // 4 + 8)
    img = np.where(band, noise, img)
    return img.astype(np.uint8)
