"""ReasonSeg: ``reason_seg/<ds>/<split>/*.jpg`` with a same-name LabelMe-like ``*.json``.

JSON: ``text`` (list of 1-5 phrasings, or one string), ``is_sentence``, ``shapes`` with ``label``
("target" / "ignore" / "flag") and ``points``. ``--reason_seg_data "ReasonSeg|train"``; the split
part may join several splits with "_" (``ReasonSeg|train_val``).

Training sample: up to ``num_classes_per_sample`` texts without replacement, each asked with the
long template (``is_sentence``) or the short one, mask = target pixels (ignore -> background, as the
original). An image without any target pixel is a ``no_target`` problem, never an empty mask.

Explanations (``explanatory/train.json``: ``image``, ``query``, ``outputs``): for an image that has
one, the kind of conversation is chosen once per sample: with probability ``explanatory`` a text-only
answer (the explanation, no [SEG], no mask), otherwise evenly a plain [SEG] answer or [SEG] followed
by the explanation. ``explanatory=-1`` disables them. The original built its conversations inside
the per-text loop (**bug**, harmless there); here every sampled text gets its own conversation.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..constants import IMAGE_TOKEN
from .base import FamilyDataset, RawSample, Source, sample_without_replacement
from .files import image_size, read_json, read_rgb, require_dir, sorted_files
from .masks import reason_seg_mask
from .problems import DataError, SampleProblem
from .templates import EXPLANATORY_QUESTION_LIST, answer, long_question, pick, short_question

logger = logging.getLogger("lisa.data")

DEFAULT_REASON_SEG_DATA = "ReasonSeg|train"


def parse_spec(spec: str) -> tuple[str, list[str]]:
    parts = spec.split("|")
    if len(parts) != 2 or not all(parts):
        raise DataError(f"--reason_seg_data {spec!r}: expected 'NAME|split[_split...]', e.g. "
                        "'ReasonSeg|train'")
    return parts[0], parts[1].split("_")


def read_annotation(json_path: str, h: int, w: int) -> tuple[np.ndarray, list[str], bool]:
    """(mask {0,1,255}, texts, is_sentence) of one ReasonSeg JSON."""
    data = read_json(json_path)
    if not isinstance(data, dict):
        raise SampleProblem("bad_json", json_path, "expected a JSON object")
    texts = data.get("text")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise SampleProblem("bad_json", json_path, "'text' must be a string or a list of strings")
    texts = [t.strip() for t in texts if t.strip()]
    if not texts:
        raise SampleProblem("bad_json", json_path, "'text' holds no question")
    if "shapes" not in data:
        raise SampleProblem("bad_json", json_path, "no 'shapes'")
    mask = reason_seg_mask(data["shapes"], h, w, json_path)
    return mask, texts, bool(data.get("is_sentence", False))


def load_explanations(path: str) -> tuple[dict[str, str], list[str]]:
    """image file name -> explanation, and the problems met in the file."""
    data = read_json(path)
    if not isinstance(data, list):
        raise SampleProblem("bad_json", path, "expected a list of {image, query, outputs}")
    out, problems = {}, []
    for k, item in enumerate(data):
        if (isinstance(item, dict) and isinstance(item.get("image"), str)
                and isinstance(item.get("outputs"), str)):
            out[item["image"]] = item["outputs"]
        else:
            problems.append(f"{path} (entry {k}): needs 'image' and 'outputs' strings")
    return out, problems


class ReasonSegSource(Source):
    family = "reason_seg"

    def __init__(self, dataset_dir: str, spec: str = DEFAULT_REASON_SEG_DATA,
                 explanatory: float = 0.1):
        ds, splits = parse_spec(spec)
        self.name = spec
        self.root = os.path.join(dataset_dir, "reason_seg", ds)
        self.images: list[str] = []
        for split in splits:
            folder = require_dir(os.path.join(self.root, split), f"reason_seg {spec}")
            # a JSON without its image is a record too, so that it is counted as a missing image
            stems = {p[: -len(".jpg")] for p in sorted_files(folder, ".jpg")}
            stems |= {p[: -len(".json")] for p in sorted_files(folder, ".json")}
            self.images.extend(stem + ".jpg" for stem in sorted(stems))
        self.explanatory = float(explanatory)
        self.explanations: dict[str, str] = {}
        self.explanation_problems: list[str] = []
        self.explanatory_file = os.path.join(self.root, "explanatory", "train.json")
        if self.explanatory != -1:
            try:
                self.explanations, self.explanation_problems = load_explanations(self.explanatory_file)
            except SampleProblem as p:
                self.explanation_problems = [str(p)]
                logger.warning("%s; training ReasonSeg without explanatory answers (pass "
                               "--explanatory -1 to turn them off explicitly)", p)

    def __len__(self) -> int:
        return len(self.images)

    def record_path(self, i: int) -> str:
        return self.images[i][: -len(".jpg")] + ".json"

    def load(self, i: int, rng: np.random.Generator, num_classes: int) -> RawSample:
        path = self.images[i]
        json_path = self.record_path(i)
        image = read_rgb(path)
        mask, texts, is_sentence = read_annotation(json_path, *image.shape[:2])
        target = (mask == 1).astype(np.uint8)
        if not target.any():
            raise SampleProblem("no_target", json_path, "no target pixel (no 'target' polygon, or "
                                "it is covered by 'ignore' polygons)")
        texts = [texts[j] for j in sample_without_replacement(rng, len(texts), num_classes)]
        explanation = self.explanations.get(os.path.basename(path)) if self.explanatory != -1 else None
        choice = 0
        if explanation is not None:
            choice = 2 if rng.random() < self.explanatory else int(rng.integers(2))
        questions, turns = [], []
        for text in texts:
            if choice == 0:
                q = long_question(rng, text) if is_sentence else short_question(rng, text)
                a = answer(rng)
            elif choice == 1:
                q = IMAGE_TOKEN + "\n" + text + " " + pick(rng, EXPLANATORY_QUESTION_LIST)
                a = answer(rng) + " " + explanation
            else:
                q, a = IMAGE_TOKEN + "\n" + text, explanation
            questions.append(q)
            turns.append([(q, a)])
        masks = [] if choice == 2 else [target] * len(texts)
        return RawSample(path, image, turns, masks, None, questions, texts)

    def inspect(self, i: int, deep: bool = False) -> int:
        path = self.images[i]
        h, w = read_rgb(path).shape[:2] if deep else image_size(path)
        mask, texts, _ = read_annotation(self.record_path(i), h, w)
        if not (mask == 1).any():
            raise SampleProblem("no_target", self.record_path(i), "no target pixel")
        return len(texts)


class ReasonSegDataset(FamilyDataset):
    family = "reason_seg"

    def __init__(self, dataset_dir: str, reason_seg_data: str = DEFAULT_REASON_SEG_DATA,
                 explanatory: float = 0.1, **kwargs):
        specs = [s for s in reason_seg_data.split("||") if s]
        super().__init__([ReasonSegSource(dataset_dir, s, explanatory) for s in specs], **kwargs)
