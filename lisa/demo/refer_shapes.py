"""Synthetic shapes in the RefCOCO format, so one image carries several referring questions.

A ReasonSeg file asks one question per image, and its 2-3 texts are phrasings of it (one target).
Learning that the mask must follow the words is much faster when the same image is asked about
different shapes within one training step, which is what the referring-segmentation family does:
a record is an image, and a sample draws up to three of its (expression, object) pairs. So the demo
also writes its shapes as a RefCOCO set (``refer_seg/refcoco/instances.json`` with exact RLE masks,
``refs(unc).json`` with one expression per ref, images under ``images/mscoco/images/train2014``),
using the generator's own images and uniquely answerable questions (``lisa.demo.shapes``) from a
stream no ReasonSeg split uses. Train on it with ``--dataset "reason_seg||refer_seg"
--refer_seg_data refcoco``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask
from tqdm import tqdm

REFER_STREAM = 7  # a generator stream of lisa.demo.shapes that no split uses
DATASET = "refcoco"


def _rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_refer_shapes(root, n_images: int, seed: int, progress: bool = True) -> dict:
    """Write ``n_images`` images with all their answerable questions; returns counts."""
    from .shapes import generate_image, query_candidates, save_jpeg

    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    base = Path(root) / "refer_seg"
    image_dir = base / "images" / "mscoco" / "images" / "train2014"
    ds_dir = base / DATASET
    image_dir.mkdir(parents=True, exist_ok=True)
    ds_dir.mkdir(parents=True, exist_ok=True)
    images, anns, refs = [], [], []
    for i in tqdm(range(n_images), desc="refer shapes", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, REFER_STREAM, i])
        for _ in range(100):
            image, shapes = generate_image(rng)
            cands = query_candidates(shapes)
            if cands:
                break
        name = f"COCO_train2014_{i + 1:012d}.jpg"
        save_jpeg(image, image_dir / name)
        w, h = image.size
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for k, shape in enumerate(shapes):
            x0, y0, x1, y1 = shape.bbox
            anns.append({"id": (i + 1) * 10 + k, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "area": shape.area, "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
                         "segmentation": _rle(shape.mask(h, w))})
        for cand in cands:
            ref_id = len(refs) + 1
            sent = cand.phrases[int(rng.integers(len(cand.phrases)))]
            refs.append({"ref_id": ref_id, "ann_id": (i + 1) * 10 + cand.target, "image_id": i + 1,
                         "category_id": 1, "split": "train", "sent_ids": [ref_id],
                         "sentences": [{"sent_id": ref_id, "sent": sent, "raw": sent, "tokens": sent.split()}]})
    instances = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "shape"}]}
    (ds_dir / "instances.json").write_text(json.dumps(instances) + "\n", encoding="utf-8")
    (ds_dir / "refs(unc).json").write_text(json.dumps(refs) + "\n", encoding="utf-8")
    return {"images": len(images), "refs": len(refs), "refer_seg_data": DATASET}
