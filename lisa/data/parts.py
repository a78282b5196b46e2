"""Part segmentation sources in COCO JSON: PACO-LVIS and PASCAL-Part (VLPart's ``train.json``).

Layout::

    vlpart/paco/annotations/paco_lvis_v1_train.json
        images: coco/<file_name>  (file_name has train2017/)
    vlpart/pascal_part/train.json
        images: vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages/<file_name>

Per sample, up to ``num_classes_per_sample`` *annotations* (instances) of one image are drawn
without replacement, so two questions about "car wheel" with different masks can appear.
An ``obj:part`` category is asked about as "obj part" or "the part of the obj" (even odds).
Names are cleaned into readable text: qualifiers such as ``_(automobile)`` are dropped and
underscores become spaces; the original kept underscores ("the lid of the trash_can") and produced
"segment the the lid ..." (**bug**, see :func:`lisa.data.templates.short_question`).
The category ``name`` is used, never its ``abbr``.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np

from .base import RawSample, Source, sample_without_replacement
from .files import image_size, load_json_or_fail, read_rgb
from .masks import coco_segmentation_mask
from .problems import DataError, SampleProblem
from .templates import answer, short_question


def clean_name(text: str) -> str:
    return " ".join(text.split("_(")[0].replace("_", " ").split())


def split_category(name: str) -> tuple[str, ...]:
    """``"car_(automobile):wheel"`` -> ``("car", "wheel")``; ``"mug"`` -> ``("mug",)``."""
    return tuple(clean_name(p) for p in name.strip().split(":"))


def phrase(parts: tuple[str, ...], rng: np.random.Generator) -> str:
    if len(parts) == 1:
        return parts[0]
    obj, part = parts[0], parts[-1]
    return f"{obj} {part}" if rng.random() < 0.5 else f"the {part} of the {obj}"


class CocoPartSource(Source):
    family = "sem_seg"

    def __init__(self, name: str, json_path: str, image_root: str):
        self.name = name
        self.json_path = json_path
        self.image_root = image_root
        if not os.path.isfile(json_path):
            raise DataError(f"{name}: expected the file {json_path}, which does not exist")
        data = load_json_or_fail(json_path, name)
        try:
            self.cats = {c["id"]: split_category(str(c["name"])) for c in data["categories"]}
            images = {img["id"]: img for img in data["images"]}
            anns = defaultdict(list)
            for ann in data["annotations"]:
                anns[ann["image_id"]].append(ann)
        except (KeyError, TypeError) as e:
            raise DataError(f"{json_path}: malformed COCO JSON (missing {e})") from None
        # Images without annotations are never usable (the original resampled them away).
        self.records = [(images[i], anns[i]) for i in sorted(anns, key=str) if i in images]
        self.orphans = sorted(set(anns) - set(images), key=str)  # annotations of unknown images

    def __len__(self) -> int:
        return len(self.records)

    def record_path(self, i: int) -> str:
        return os.path.join(self.image_root, str(self.records[i][0].get("file_name", "?")))

    def _info(self, i: int) -> tuple[str, int, int]:
        img, _ = self.records[i]
        try:
            return (os.path.join(self.image_root, str(img["file_name"])), int(img["height"]),
                    int(img["width"]))
        except (KeyError, TypeError, ValueError) as e:
            raise SampleProblem("bad_json", self.json_path, f"image record {img.get('id')} lacks "
                                f"file_name/height/width ({e})") from None

    def _mask(self, ann: dict, h: int, w: int) -> np.ndarray:
        where = f"{self.json_path} (annotation {ann.get('id')})"
        if ann.get("category_id") not in self.cats:
            raise SampleProblem("bad_class", where, f"category_id {ann.get('category_id')!r} is not "
                                "in 'categories'")
        return coco_segmentation_mask(ann.get("segmentation"), h, w, where)

    def load(self, i: int, rng: np.random.Generator, num_classes: int) -> RawSample:
        path, h, w = self._info(i)
        image = read_rgb(path)
        if image.shape[:2] != (h, w):
            raise SampleProblem("size_mismatch", path, f"image is {image.shape[:2]}, the JSON says "
                                f"{(h, w)}")
        anns = self.records[i][1]
        chosen = [anns[j] for j in sample_without_replacement(rng, len(anns), num_classes)]
        masks = [self._mask(a, h, w) for a in chosen]
        names = [phrase(self.cats[a["category_id"]], rng) for a in chosen]
        questions = [short_question(rng, n) for n in names]
        turns = [[(q, answer(rng))] for q in questions]
        return RawSample(path, image, turns, masks, None, questions, names)

    def inspect(self, i: int, deep: bool = False) -> int:
        path, h, w = self._info(i)
        size = image_size(path)
        if size != (h, w):
            raise SampleProblem("size_mismatch", path, f"image is {size}, the JSON says {(h, w)}")
        anns = self.records[i][1]
        for a in anns:
            if deep:
                self._mask(a, h, w)
            elif a.get("category_id") not in self.cats:
                raise SampleProblem("bad_class", self.json_path, f"annotation {a.get('id')}: "
                                    f"category_id {a.get('category_id')!r} is not in 'categories'")
        return len(anns)


def paco_lvis_source(dataset_dir: str) -> CocoPartSource:
    return CocoPartSource("paco_lvis",
                          os.path.join(dataset_dir, "vlpart", "paco", "annotations",
                                       "paco_lvis_v1_train.json"),
                          os.path.join(dataset_dir, "coco"))


def pascal_part_source(dataset_dir: str) -> CocoPartSource:
    root = os.path.join(dataset_dir, "vlpart", "pascal_part")
    return CocoPartSource("pascal_part", os.path.join(root, "train.json"),
                          os.path.join(root, "VOCdevkit", "VOC2010", "JPEGImages"))
