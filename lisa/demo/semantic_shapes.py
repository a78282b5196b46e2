"""Synthetic shapes as a semantic segmentation set in the Mapillary Vistas v2.0 format.

The questions of the shapes task that need the *kind* of a shape ("the red square" beside a red
circle, "the triangle that is not blue") are a small part of the ReasonSeg and RefCOCO files, and
most of them can be answered from colour alone. A semantic map asks about kind only: "Can you
segment the circle in this image?" is answered by every circle, whatever its colour.

Mapillary is the label-map format whose class names live in the data folder
(``mapillary/config_v2.0.json``), so the kinds are written there: palette PNGs under
``mapillary/training/v2.0/labels/`` whose pixel values index ``labels`` (background = Unlabeled,
never asked about), images under ``mapillary/training/images/``, and as in Mapillary the instance
maps under ``mapillary/training/v2.0/instances/`` (16-bit PNGs, label * 256 + instance number).
Train on it with ``--dataset "sem_seg||reason_seg||refer_seg" --sem_seg_data mapillary``.

It is not part of the demo's ``lisa train`` mix (there it did not help the kind questions; see
docs/demo.md): lisa/demo/pretrain.py uses it for a dense pretraining of SAM's encoder before
``lisa train``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

SEMANTIC_STREAM = 8  # a generator stream of lisa.demo.shapes that no other set uses
SEMANTIC_SET = "mapillary"  # the sem_seg_data name (and folder) the kind maps are written as
PALETTE = {"circle": (220, 120, 40), "square": (40, 120, 220), "triangle": (60, 180, 90)}
UNLABELED = ("void--unlabeled", "Unlabeled", (0, 0, 0))
INSTANCE_BASE = 256  # instance map value = label index * 256 + instance number (Mapillary's encoding)


def instance_path(label_path) -> Path:
    """The instance map beside a label map (``.../v2.0/labels/x.png`` -> ``.../v2.0/instances/x.png``)."""
    label_path = Path(label_path)
    return label_path.parent.parent / "instances" / label_path.name


def _labels() -> list[tuple[str, str, tuple[int, int, int]]]:
    from .shapes import SHAPES

    return [(f"shape--{s}", s.capitalize(), PALETTE[s]) for s in SHAPES] + [UNLABELED]


def write_semantic_shapes(root, n_images: int, seed: int, progress: bool = True) -> dict:
    """Write ``n_images`` images and their kind maps; returns counts."""
    from .shapes import SHAPES, generate_image, remove_stale, save_jpeg

    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    base = Path(root) / SEMANTIC_SET
    image_dir, label_dir = base / "training" / "images", base / "training" / "v2.0" / "labels"
    instance_dir = instance_path(label_dir / "x.png").parent
    names = [f"shapes_{i:06d}" for i in range(n_images)]
    for folder, suffix in ((image_dir, ".jpg"), (label_dir, ".png"), (instance_dir, ".png")):
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale(folder, "shapes_", {n + suffix for n in names}, suffixes=(suffix,))
    labels = _labels()
    config = {"labels": [{"name": n, "readable": r, "color": list(c), "instances": False, "evaluate": True}
                         for n, r, c in labels], "version": "2.0", "mapping": "public"}
    (base / "config_v2.0.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    palette = [v for _, _, c in labels for v in c]
    palette += [0] * (768 - len(palette))
    pixels = dict.fromkeys(SHAPES, 0)
    for i, name in enumerate(tqdm(names, desc="semantic shapes", unit="img", disable=not progress)):
        rng = np.random.default_rng([seed, SEMANTIC_STREAM, i])
        image, shapes = generate_image(rng)
        w, h = image.size
        label = np.full((h, w), len(labels) - 1, np.uint8)
        instances = np.full((h, w), (len(labels) - 1) * INSTANCE_BASE, np.uint16)
        for number, shape in enumerate(shapes, start=1):
            m = shape.mask(h, w)
            label[m] = SHAPES.index(shape.shape)
            instances[m] = SHAPES.index(shape.shape) * INSTANCE_BASE + number
            pixels[shape.shape] += int(m.sum())
        save_jpeg(image, image_dir / f"{name}.jpg")
        Image.fromarray(instances).save(instance_dir / f"{name}.png")
        png = Image.fromarray(label)  # mode L; putpalette makes it P with the same indices
        png.putpalette(palette)
        png.save(label_dir / f"{name}.png")
    return {"images": n_images, "classes": list(SHAPES), "pixels": pixels, "sem_seg_data": SEMANTIC_SET}
