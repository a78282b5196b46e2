"""Semantic segmentation family: ade20k, cocostuff, mapillary (label maps) and the part datasets
paco_lvis, pascal_part (COCO JSON, see :mod:`lisa.data.parts`).

Label maps are read as raw indices and remapped to "class index or 255 (ignore)":

- ade20k: raw 0 ("other") -> 255, raw k -> k - 1 (``wall`` = 0 ... ``flag`` = 149).
- cocostuff: value = COCO-Stuff id - 1; the 28 classes whose name contains "-" -> 255.
- mapillary (``config_v2.0.json``): value = index into ``labels``. The original can ask about
  "unlabeled" (**bug**): the Unlabeled label is ignored here.

Per sample: up to ``num_classes_per_sample`` distinct classes present in the map are drawn
without replacement, one question and one [SEG] answer each; mask = (label == class).
Paths are built from the layout's folders, not by string replacement on the whole path as in the
original (**bug**: it broke when ``--dataset_dir`` contained e.g. "images").
A value that is neither a class nor 255 is a ``bad_class`` problem (sample skipped).
"""

from __future__ import annotations

import os

import numpy as np

from .base import FamilyDataset, RawSample, Source, sample_without_replacement
from .classes import ADE20K_CLASSES, COCOSTUFF_CLASSES, COCOSTUFF_IGNORED
from .files import image_size, load_json_or_fail, read_label_png, read_rgb, require_dir, sorted_files
from .masks import IGNORE_LABEL
from .problems import DataError, SampleProblem
from .templates import answer, short_question

SEM_SEG_DATASETS = ("ade20k", "cocostuff", "pascal_part", "paco_lvis", "mapillary")
DEFAULT_SEM_SEG_DATA = "ade20k||cocostuff||pascal_part||paco_lvis||mapillary"


class LabelMapSource(Source):
    family = "sem_seg"

    def __init__(self, name: str, pairs: list[tuple[str, str]], classes: list[str],
                 ignored: set[int] = frozenset(), raw_offset: int = 0):
        self.name = name
        self.pairs = pairs  # (image path, label path)
        self.classes = list(classes)
        # remap: raw value v -> v - raw_offset; raw values below the offset and ignored classes -> 255
        lut = np.full(256, -1, dtype=np.int64)  # -1 = out of range
        lut[IGNORE_LABEL] = IGNORE_LABEL
        for raw in range(raw_offset):
            lut[raw] = IGNORE_LABEL
        for c in range(len(self.classes)):
            if c + raw_offset < 255:
                lut[c + raw_offset] = IGNORE_LABEL if c in ignored else c
        self.lut = lut

    def __len__(self) -> int:
        return len(self.pairs)

    def record_path(self, i: int) -> str:
        return self.pairs[i][1]

    def label(self, i: int, hw: tuple[int, int]) -> np.ndarray:
        """Image ``i``'s map of class indices (255: not asked about); ``hw`` is its image's size."""
        image_path, label_path = self.pairs[i]
        raw = read_label_png(label_path)
        if raw.shape != hw:
            raise SampleProblem("size_mismatch", label_path,
                                f"label size {raw.shape} differs from the image size {hw} of {image_path}")
        label = self.lut[raw.astype(np.int64)]
        if (label < 0).any():
            bad = sorted(int(v) for v in np.unique(raw[label < 0]))[:5]
            raise SampleProblem("bad_class", label_path, f"label values {bad} are not classes of "
                                f"{self.name} ({len(self.classes)} classes) nor 255")
        present = [int(v) for v in np.unique(label) if v != IGNORE_LABEL]
        if not present:
            raise SampleProblem("no_target", label_path, "only ignored pixels, nothing to ask about")
        return label

    def load(self, i: int, rng: np.random.Generator, num_classes: int) -> RawSample:
        image_path = self.pairs[i][0]
        image = read_rgb(image_path)
        label = self.label(i, image.shape[:2])
        present = [int(v) for v in np.unique(label) if v != IGNORE_LABEL]
        chosen = [present[j] for j in sample_without_replacement(rng, len(present), num_classes)]
        names = [self.classes[c] for c in chosen]
        questions = [short_question(rng, n) for n in names]
        turns = [[(q, answer(rng))] for q in questions]
        masks = [(label == c).astype(np.uint8) for c in chosen]
        return RawSample(image_path, image, turns, masks, label.astype(np.int64), questions, names)

    def inspect(self, i: int, deep: bool = False) -> int:
        image_path, label_path = self.pairs[i]
        hw = image_size(image_path)
        if deep:
            self.label(i, hw)
        elif not os.path.isfile(label_path):
            raise SampleProblem("missing_file", label_path, "file not found")
        return 1


def _ade20k(root: str) -> LabelMapSource:
    images = require_dir(os.path.join(root, "ade20k", "images", "training"), "ade20k")
    labels = os.path.join(root, "ade20k", "annotations", "training")
    stems = {os.path.basename(p)[:-4] for p in sorted_files(images, ".jpg")}
    if os.path.isdir(labels):  # a label without its image is reported as a missing image
        stems |= {os.path.basename(p)[:-4] for p in sorted_files(labels, ".png")}
    pairs = [(os.path.join(images, s + ".jpg"), os.path.join(labels, s + ".png")) for s in sorted(stems)]
    return LabelMapSource("ade20k", pairs, ADE20K_CLASSES, raw_offset=1)


def _cocostuff(root: str) -> LabelMapSource:
    labels = require_dir(os.path.join(root, "cocostuff", "train2017"), "cocostuff")
    images = os.path.join(root, "coco", "train2017")
    pairs = [(os.path.join(images, os.path.basename(p)[:-4] + ".jpg"), p)
             for p in sorted_files(labels, ".png")]
    return LabelMapSource("cocostuff", pairs, COCOSTUFF_CLASSES, ignored=COCOSTUFF_IGNORED)


def _mapillary(root: str) -> LabelMapSource:
    config_path = os.path.join(root, "mapillary", "config_v2.0.json")
    if not os.path.isfile(config_path):
        raise DataError(f"mapillary: expected the file {config_path}, which does not exist")
    config = load_json_or_fail(config_path, "mapillary")
    try:
        entries = config["labels"]
        classes = [str(x["readable"]).lower() for x in entries]
    except (KeyError, TypeError) as e:
        raise DataError(f"{config_path}: every entry of 'labels' needs 'readable' ({e})") from None
    ignored = {i for i, x in enumerate(entries)
               if classes[i] == "unlabeled" or str(x.get("name", "")).endswith("unlabeled")}
    labels = require_dir(os.path.join(root, "mapillary", "training", "v2.0", "labels"), "mapillary")
    images = os.path.join(root, "mapillary", "training", "images")
    stems = {os.path.basename(p)[:-4] for p in sorted_files(labels, ".png")}
    if os.path.isdir(images):  # an image without its label is reported as a missing label
        stems |= {os.path.basename(p)[:-4] for p in sorted_files(images, ".jpg")}
    pairs = [(os.path.join(images, s + ".jpg"), os.path.join(labels, s + ".png")) for s in sorted(stems)]
    return LabelMapSource("mapillary", pairs, classes, ignored=ignored)


def sem_seg_source(dataset_dir: str, name: str) -> Source:
    """The source for one ``--sem_seg_data`` entry; DataError names the folder it expected."""
    from .parts import paco_lvis_source, pascal_part_source

    builders = {"ade20k": _ade20k, "cocostuff": _cocostuff, "mapillary": _mapillary,
                "paco_lvis": paco_lvis_source, "pascal_part": pascal_part_source}
    if name not in builders:
        raise DataError(f"unknown --sem_seg_data entry {name!r}; expected some of {SEM_SEG_DATASETS}")
    return builders[name](dataset_dir)


class SemSegDataset(FamilyDataset):
    family = "sem_seg"

    def __init__(self, dataset_dir: str, sem_seg_data: str = DEFAULT_SEM_SEG_DATA, **kwargs):
        names = [n for n in sem_seg_data.split("||") if n]
        super().__init__([sem_seg_source(dataset_dir, n) for n in names], **kwargs)
