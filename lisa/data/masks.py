"""Mask rasterisation: COCO polygons / RLE (pycocotools) and ReasonSeg LabelMe polygons (OpenCV)."""

from __future__ import annotations

import numbers
import warnings

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from .problems import SampleProblem

IGNORE_LABEL = 255


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and np.isfinite(x)


def _check_polygon(poly, path: str) -> None:
    if not isinstance(poly, (list, tuple)) or len(poly) < 6 or len(poly) % 2:
        n = len(poly) if isinstance(poly, (list, tuple)) else type(poly).__name__
        raise SampleProblem("bad_polygon", path, f"a COCO polygon needs an even number (>= 6) of "
                            f"coordinates, got {n}")
    if not all(_is_number(v) for v in poly):
        raise SampleProblem("bad_polygon", path, "a COCO polygon holds a non-numeric coordinate")


def _rle_objects(segm, h: int, w: int, path: str) -> list[dict]:
    rles = [segm] if isinstance(segm, dict) else list(segm)
    out = []
    for rle in rles:
        if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
            raise SampleProblem("bad_polygon", path, "a segmentation is neither a polygon list nor "
                                "an RLE dict with 'size' and 'counts'")
        size = [int(v) for v in rle["size"]]
        if size != [h, w]:
            raise SampleProblem("size_mismatch", path, f"RLE size {size} differs from the image "
                                f"size {[h, w]}")
        counts = rle["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            out.append(coco_mask.frPyObjects(rle, h, w))
        else:
            out.append({"size": size, "counts": counts.encode() if isinstance(counts, str) else counts})
    return out


def coco_segmentation_mask(segm, h: int, w: int, path: str) -> np.ndarray:
    """Union (0/1 uint8, HxW) of a COCO segmentation: polygon list, RLE dict or list of RLE dicts.

    The original sums the decoded parts, so overlapping polygons of one object get the value 2
    (**bug**); this returns their union. An empty segmentation or one that covers no pixel is a
    problem, never a silent all-zero mask.
    """
    if segm is None or (isinstance(segm, (list, tuple)) and len(segm) == 0):
        raise SampleProblem("bad_polygon", path, "empty segmentation")
    try:
        if isinstance(segm, (list, tuple)) and isinstance(segm[0], (list, tuple)):
            for poly in segm:
                _check_polygon(poly, path)
            rles = coco_mask.frPyObjects([list(map(float, p)) for p in segm], h, w)
        else:
            rles = _rle_objects(segm, h, w, path)
        with warnings.catch_warnings():  # pycocotools' __array__ predates numpy 2's copy keyword
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = coco_mask.decode(rles)
    except SampleProblem:
        raise
    except Exception as e:  # pycocotools raises bare Exceptions / TypeErrors on broken RLE
        raise SampleProblem("bad_polygon", path, f"cannot decode the segmentation ({e})") from None
    if decoded.ndim == 3:
        decoded = decoded.max(axis=2)
    m = (decoded > 0).astype(np.uint8)
    if not m.any():
        raise SampleProblem("bad_polygon", path, "the segmentation covers no pixel")
    return m


def _fill(canvas: np.ndarray, pts: np.ndarray, value: int) -> None:
    cv2.polylines(canvas, [pts], True, value, 1)
    cv2.fillPoly(canvas, [pts], value)


def labelme_points(points, path: str) -> np.ndarray:
    """int32 [n,1,2] points truncated towards zero (not rounded), as the original does."""
    if (not isinstance(points, (list, tuple)) or len(points) < 3
            or not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(map(_is_number, p))
                       for p in points)):
        raise SampleProblem("bad_polygon", path, "a shape needs a list of at least 3 [x, y] points")
    return np.asarray(points, dtype=np.float64).astype(np.int32).reshape(-1, 1, 2)


def reason_seg_mask(shapes, h: int, w: int, path: str) -> np.ndarray:
    """The HxW uint8 mask of a ReasonSeg JSON: 1 = target, 255 = ignore, 0 = background.

    Shapes labelled "flag" are skipped. Polygons are drawn from the largest area to the smallest, so
    a small target listed before a large ignore box stays on top; any label containing "ignore" is
    written as 255.
    """
    if not isinstance(shapes, list):
        raise SampleProblem("bad_json", path, "'shapes' must be a list")
    polys, values, areas = [], [], []
    for shape in shapes:
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise SampleProblem("bad_json", path, "every shape needs a string 'label' and 'points'")
        label = shape["label"].lower()
        if label == "flag":
            continue
        pts = labelme_points(shape.get("points"), path)
        scratch = np.zeros((h, w), dtype=np.uint8)
        _fill(scratch, pts, 1)
        polys.append(pts)
        values.append(IGNORE_LABEL if "ignore" in label else 1)
        areas.append(int(scratch.sum()))
    mask = np.zeros((h, w), dtype=np.uint8)
    for i in np.argsort(np.asarray(areas), kind="stable")[::-1]:
        _fill(mask, polys[i], values[i])
    return mask
