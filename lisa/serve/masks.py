"""Mask encodings for API answers: COCO RLE (pycocotools) or PNG, each with its area and bbox."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

MASK_FORMATS = ("rle", "png")


def mask_bbox(mask: np.ndarray) -> list[int]:
    """``[x, y, width, height]`` of the set pixels (COCO convention); all zeros for an empty mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def encode_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE: ``{"size": [h, w], "counts": str}`` (column-major, as pycocotools)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    return mask_utils.decode({"size": list(rle["size"]),
                              "counts": counts.encode("ascii") if isinstance(counts, str) else counts}).astype(bool)


def encode_png(mask: np.ndarray) -> str:
    """Base64 of a 1-bit PNG (0 = background, 255 when viewed as 8-bit)."""
    buf = io.BytesIO()
    Image.fromarray(mask.astype(bool)).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png(data: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(data))) as img:
        return np.asarray(img.convert("L")) > 0


def describe_mask(mask: np.ndarray, fmt: str = "rle") -> dict:
    if fmt not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {', '.join(MASK_FORMATS)}, not {fmt!r}")
    mask = np.asarray(mask, dtype=bool)
    out = {"area": int(mask.sum()), "bbox": mask_bbox(mask)}
    if fmt == "rle":
        out["rle"] = encode_rle(mask)
    else:
        out["png"] = encode_png(mask)
    return out
