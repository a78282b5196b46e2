"""Referring segmentation family: refclef, refcoco, refcoco+, refcocog (+ grefcoco, optional).

Training uses the refs whose split is "train". A record is one image; a sample draws up to
``num_classes_per_sample`` of its (sentence, object) pairs without replacement and asks a
SHORT_QUESTION_LIST question with the sentence (``sent``, stripped and lower-cased) as class name.
Masks are the union of the object's polygons / RLE parts (the original summed them, **bug**).
A ref whose annotation is missing or whose segmentation is empty or broken makes the sample a
problem (counted, another one drawn); the only legitimate empty mask is a gRefCOCO "no target"
expression.
"""

from __future__ import annotations

import os

import numpy as np

from .base import FamilyDataset, RawSample, Source, sample_without_replacement
from .files import image_size, read_rgb
from .masks import coco_segmentation_mask
from .problems import DataError, SampleProblem
from .refer import REFER_DATASETS, ReferIndex
from .templates import answer, short_question

DEFAULT_REFER_SEG_DATA = "refclef||refcoco||refcoco+||refcocog"


def refer_root(dataset_dir: str) -> str:
    return os.path.join(dataset_dir, "refer_seg")


def object_mask(index: ReferIndex, ann_ids: list, image_id, h: int, w: int) -> np.ndarray:
    """Union mask of the annotations of one referring expression (0/1 uint8)."""
    where_img = index.image_path(image_id)
    if not ann_ids:
        if index.dataset == "grefcoco":  # "no target" expression: the empty mask is the answer
            return np.zeros((h, w), dtype=np.uint8)
        raise SampleProblem("bad_class", index.refs_file, f"a ref of {where_img} names no annotation")
    mask = np.zeros((h, w), dtype=np.uint8)
    for ann_id in ann_ids:
        ann = index.anns.get(ann_id)
        if ann is None:
            raise SampleProblem("bad_class", index.instances_file,
                                f"annotation id {ann_id!r} (referred to by {index.refs_file}) does "
                                "not exist")
        where = f"{index.instances_file} (annotation {ann_id})"
        mask |= coco_segmentation_mask(ann.get("segmentation"), h, w, where)
    return mask


class ReferSource(Source):
    family = "refer_seg"

    def __init__(self, dataset_dir: str, name: str, split: str = "train",
                 index: ReferIndex | None = None):
        if name not in REFER_DATASETS:
            raise DataError(f"unknown --refer_seg_data entry {name!r}; expected some of {REFER_DATASETS}")
        self.name = name
        self.index = index or ReferIndex(refer_root(dataset_dir), name)
        per_image = self.index.split_images(split)
        self.records = [(img_id, per_image[img_id]) for img_id in sorted(per_image, key=str)]

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, i: int) -> tuple[str, int, int]:
        img_id = self.records[i][0]
        info = self.index.images.get(img_id)
        if info is None:
            raise SampleProblem("bad_class", self.index.refs_file,
                                f"image id {img_id!r} is not in {self.index.instances_file}")
        try:
            return self.index.image_path(img_id), int(info["height"]), int(info["width"])
        except (KeyError, TypeError, ValueError) as e:
            raise SampleProblem("bad_json", self.index.instances_file,
                                f"image record {img_id!r} lacks file_name/height/width ({e})") from None

    def record_path(self, i: int) -> str:
        img_id = self.records[i][0]
        if img_id in self.index.images:
            return self.index.image_path(img_id)
        return f"{self.index.refs_file} (image {img_id})"

    def load(self, i: int, rng: np.random.Generator, num_classes: int) -> RawSample:
        path, h, w = self._image(i)
        image = read_rgb(path)
        if image.shape[:2] != (h, w):
            raise SampleProblem("size_mismatch", path, f"image is {image.shape[:2]}, "
                                f"{self.index.instances_file} says {(h, w)}")
        pairs = self.records[i][1]
        chosen = [pairs[j] for j in sample_without_replacement(rng, len(pairs), num_classes)]
        img_id = self.records[i][0]
        masks = [object_mask(self.index, ann_ids, img_id, h, w) for _, ann_ids, _ in chosen]
        sents = [s for s, _, _ in chosen]
        questions = [short_question(rng, s) for s in sents]
        turns = [[(q, answer(rng))] for q in questions]
        return RawSample(path, image, turns, masks, None, questions, sents)

    def inspect(self, i: int, deep: bool = False) -> int:
        path, h, w = self._image(i)
        size = image_size(path)
        if size != (h, w):
            raise SampleProblem("size_mismatch", path, f"image is {size}, "
                                f"{self.index.instances_file} says {(h, w)}")
        img_id, pairs = self.records[i]
        for _, ann_ids, _ in pairs:
            if deep:
                object_mask(self.index, ann_ids, img_id, h, w)
            else:
                missing = [a for a in ann_ids if a not in self.index.anns]
                if missing:
                    raise SampleProblem("bad_class", self.index.instances_file,
                                        f"annotation ids {missing} do not exist")
        return len(pairs)


class ReferSegDataset(FamilyDataset):
    family = "refer_seg"

    def __init__(self, dataset_dir: str, refer_seg_data: str = DEFAULT_REFER_SEG_DATA, **kwargs):
        names = [n for n in refer_seg_data.split("||") if n]
        super().__init__([ReferSource(dataset_dir, n) for n in names], **kwargs)
