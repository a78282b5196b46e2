"""Validation sets: ``ReasonSeg|val`` (``|test``) and refcoco-family splits (``refcoco|unc|val``).

One item per image, masks at the image's original resolution, teacher-forced prompts as the
original LISA validation: ReasonSeg uses the first text only; refer splits use every sentence of every
ref of the split. Items have ``inference=True``.

``label`` is the ignore map of the image: pixels equal to 255 are excluded from the metrics. For
ReasonSeg it is the raw {0, 1, 255} mask (the "ignore" polygons carried through); for refer splits
nothing is ignored (all 0). ``masks`` are 0/1.

Refer data is read from ``<dataset_dir>/refer_seg`` as in training. The original read it from
``<dataset_dir>`` itself for validation (**bug**); a ``dataset_dir`` laid out that way (holding
``refcoco/`` directly) is still accepted.

Records that cannot be used (missing image, malformed JSON or polygon, no target pixel, unknown
annotation) are found when the set is built, counted and left out (``--strict_data``: error), so
``len()`` is the number of usable images. Images are listed in sorted order (the original used an
unsorted glob).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .base import RawSample, make_item
from .files import read_rgb
from .problems import DataError, ProblemCounter, SampleProblem
from .reason_seg import ReasonSegSource, read_annotation
from .refer import ReferIndex
from .refer_seg import ReferSource, object_mask
from .templates import VAL_ANSWER, VAL_LONG_QUESTION, VAL_SHORT_QUESTION


def resolve_refer_root(dataset_dir: str, ds: str) -> str:
    primary = os.path.join(dataset_dir, "refer_seg")
    if not os.path.isdir(os.path.join(primary, ds)) and os.path.isdir(os.path.join(dataset_dir, ds)):
        return dataset_dir  # the original validation layout
    return primary


class ValDataset(torch.utils.data.Dataset):
    def __init__(self, dataset_dir: str, val_name: str = "ReasonSeg|val", *, clip_size: int = 224,
                 sam_size: int = 1024, conv_type: str = "llava_v1", use_mm_start_end: bool = True,
                 strict: bool = False, counter: ProblemCounter | None = None, vision=None):
        self.val_name = val_name
        self.clip_size, self.sam_size = int(clip_size), int(sam_size)
        self.vision = vision  # lisa.preprocess.VisionInput; None: CLIP preprocessing at clip_size
        self.conv_type = conv_type
        self.use_mm_start_end = use_mm_start_end
        self.counter = counter if counter is not None else ProblemCounter(strict=strict)
        parts = val_name.split("|")
        if len(parts) == 2:
            self.kind = "reason_seg"
            self.source = ReasonSegSource(dataset_dir, val_name, explanatory=-1)
        elif len(parts) == 3:
            self.kind = "refer_seg"
            ds, split_by, split = parts
            index = ReferIndex(resolve_refer_root(dataset_dir, ds), ds, split_by)
            self.source = ReferSource(dataset_dir, ds, split=split, index=index)
        else:
            raise DataError(f"validation set {val_name!r}: expected 'ReasonSeg|val' or "
                            "'refcoco|unc|val' style")
        self.records = []
        # ReasonSeg JSONs are always parsed and rasterised by inspect(); refer masks need deep=True.
        deep = self.kind == "refer_seg"
        for i in range(len(self.source)):
            try:
                self.source.inspect(i, deep=deep)
                self.records.append(i)
            except SampleProblem as p:
                self.counter.add(p)
        if not self.records:
            raise DataError(f"validation set {val_name!r} has no usable image "
                            f"({len(self.source)} found); {self.counter.report()}")

    def __len__(self) -> int:
        return len(self.records)

    def stats(self) -> dict[str, int]:
        return self.counter.stats()

    def _raw(self, i: int) -> tuple[RawSample, np.ndarray]:
        if self.kind == "reason_seg":
            path = self.source.images[i]
            image = read_rgb(path)
            mask, texts, is_sentence = read_annotation(self.source.record_path(i), *image.shape[:2])
            text = texts[0]
            q = (VAL_LONG_QUESTION if is_sentence else VAL_SHORT_QUESTION).format(text)
            raw = RawSample(path, image, [[(q, VAL_ANSWER)]], [(mask == 1).astype(np.uint8)],
                            None, [q], [text])
            return raw, mask.astype(np.int64)
        path, h, w = self.source._image(i)
        image = read_rgb(path)
        if image.shape[:2] != (h, w):
            raise SampleProblem("size_mismatch", path, f"image is {image.shape[:2]}, the "
                                f"annotations say {(h, w)}")
        img_id, pairs = self.source.records[i]
        masks = [object_mask(self.source.index, ann_ids, img_id, h, w) for _, ann_ids, _ in pairs]
        questions = [VAL_SHORT_QUESTION.format(s) for s, _, _ in pairs]
        raw = RawSample(path, image, [[(q, VAL_ANSWER)] for q in questions], masks, None, questions,
                        [s for s, _, _ in pairs])
        return raw, np.zeros((h, w), dtype=np.int64)

    def __getitem__(self, idx: int) -> dict:
        i = self.records[idx]
        try:
            raw, ignore_map = self._raw(i)
        except SampleProblem as p:
            # Only files that broke after the set was built get here; skipping would bias the metric.
            raise DataError(f"validation set {self.val_name!r}: {p}") from None
        raw.label = ignore_map
        return make_item(raw, clip_size=self.clip_size, sam_size=self.sam_size,
                         conv_type=self.conv_type, inference=True, vision=self.vision)


def build_val_dataset(dataset_dir: str, val_name: str = "ReasonSeg|val", **kwargs) -> ValDataset:
    """``kwargs``: clip_size, sam_size, conv_type, use_mm_start_end, strict, counter, vision."""
    return ValDataset(dataset_dir, val_name, **kwargs)
