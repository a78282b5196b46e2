"""Visual instruction data in LLaVA format (``llava_dataset/llava_instruct_150k.json``).

File: ``[{"id", "image": "<file>.jpg", "conversations": [{"from": "human"|"gpt", "value"}, ...]}]``.
``--vqa_data`` is a name under ``<dataset_dir>/llava_dataset/`` (``.json`` added) or a path to any
file in that format; images are read from ``--image_folder`` (default ``<dataset_dir>/coco/train2017``).

A sample is one record: ``<image>`` is removed from the turn that holds it and put in front
(``"<image>\\n" + text``), a leading non-human turn is dropped, and all turns go into one multi-turn
conversation without masks. A record without ``"image"`` and without ``<image>`` is text only (LLaVA-1.5's
mix has them): the model gets no image features for it. The loaded JSON is never modified.
"""

from __future__ import annotations

import os

import numpy as np

from ..constants import IMAGE_TOKEN
from .base import FamilyDataset, RawSample, Source
from .files import image_size, load_json_or_fail, read_rgb
from .problems import DataError, SampleProblem

DEFAULT_VQA_DATA = "llava_instruct_150k"


def vqa_json_path(dataset_dir: str, vqa_data: str) -> str:
    if vqa_data.endswith(".json") or os.sep in vqa_data:
        return vqa_data
    return os.path.join(dataset_dir, "llava_dataset", vqa_data + ".json")


def is_text_only(record) -> bool:
    """A record without an image (no ``"image"`` field and no ``<image>`` in its turns)."""
    if not isinstance(record, dict) or record.get("image"):
        return False
    convs = record.get("conversations")
    return isinstance(convs, list) and not any(
        isinstance(t, dict) and IMAGE_TOKEN in str(t.get("value", "")) for t in convs)


def llava_turns(record, where: str) -> list[tuple[str, str]]:
    """The (user, assistant) turns of one record with LLaVA's ``<image>`` placement."""
    convs = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(convs, list) or not all(
            isinstance(t, dict) and isinstance(t.get("value"), str) and t.get("from") in ("human", "gpt")
            for t in convs):
        raise SampleProblem("bad_json", where, "'conversations' must be a list of "
                            "{'from': 'human'|'gpt', 'value': str}")
    turns = []
    for t in convs:
        text = t["value"]
        if IMAGE_TOKEN in text:
            text = (IMAGE_TOKEN + "\n" + text.replace(IMAGE_TOKEN, "").strip()).strip()
        turns.append((t["from"], text))
    if turns and turns[0][0] != "human":
        turns = turns[1:]
    if not turns or len(turns) % 2:
        raise SampleProblem("bad_json", where, "needs alternating human/gpt turns ending with gpt")
    pairs = []
    for k in range(0, len(turns), 2):
        if turns[k][0] != "human" or turns[k + 1][0] != "gpt":
            raise SampleProblem("bad_json", where, f"turn {k} / {k + 1} do not alternate human/gpt")
        pairs.append((turns[k][1], turns[k + 1][1]))
    if IMAGE_TOKEN not in pairs[0][0] and not is_text_only(record):
        # The model needs one image token per conversation (LISA splices exactly one image).
        raise SampleProblem("bad_json", where, "the first human turn does not contain <image>")
    return pairs


class VQASource(Source):
    family = "vqa"

    def __init__(self, json_path: str, image_folder: str):
        self.name = os.path.basename(json_path)[: -len(".json")] if json_path.endswith(".json") \
            else os.path.basename(json_path)
        self.json_path = json_path
        self.image_folder = image_folder
        if not os.path.isfile(json_path):
            raise DataError(f"vqa: expected the file {json_path}, which does not exist")
        data = load_json_or_fail(json_path, "vqa")
        if not isinstance(data, list):
            raise DataError(f"{json_path}: expected a JSON list of LLaVA records")
        self.records = data

    def __len__(self) -> int:
        return len(self.records)

    def _where(self, i: int) -> str:
        rec = self.records[i]
        rid = rec.get("id", i) if isinstance(rec, dict) else i
        return f"{self.json_path} (record {rid})"

    def _image_path(self, i: int) -> str:
        rec = self.records[i]
        image = rec.get("image") if isinstance(rec, dict) else None
        if not isinstance(image, str) or not image:
            raise SampleProblem("bad_json", self._where(i), "record has no 'image'")
        return os.path.join(self.image_folder, image)

    def record_path(self, i: int) -> str:
        try:
            return self._image_path(i)
        except SampleProblem:
            return self._where(i)

    def record_length(self, i: int) -> int:
        # LLaVA's modality length: words of the conversation, negative for a text-only record
        rec = self.records[i]
        convs = rec.get("conversations") if isinstance(rec, dict) else None
        words = sum(len(str(t.get("value", "")).split()) for t in convs if isinstance(t, dict)) \
            if isinstance(convs, list) else 0
        return -max(words, 1) if is_text_only(rec) else max(words, 1)

    def load(self, i: int, rng: np.random.Generator, num_classes: int) -> RawSample:
        if is_text_only(self.records[i]):
            pairs = llava_turns(self.records[i], self._where(i))
            return RawSample(self._where(i), None, [pairs], [], None, [pairs[0][0]], [])
        path = self._image_path(i)
        pairs = llava_turns(self.records[i], self._where(i))
        image = read_rgb(path)
        return RawSample(path, image, [pairs], [], None, [pairs[0][0]], [])

    def inspect(self, i: int, deep: bool = False) -> int:
        if is_text_only(self.records[i]):
            llava_turns(self.records[i], self._where(i))
            return 1
        path = self._image_path(i)
        llava_turns(self.records[i], self._where(i))
        read_rgb(path) if deep else image_size(path)
        return 1


class VQADataset(FamilyDataset):
    family = "vqa"

    def __init__(self, dataset_dir: str, vqa_data: str = DEFAULT_VQA_DATA,
                 image_folder: str | None = None, **kwargs):
        folder = image_folder or os.path.join(dataset_dir, "coco", "train2017")
        names = [n for n in vqa_data.split("||") if n]
        super().__init__([VQASource(vqa_json_path(dataset_dir, n), folder) for n in names], **kwargs)
