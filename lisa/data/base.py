"""What every training family shares: sources, the retry-on-problem loop and item assembly.

A *source* is one sub-dataset (ade20k, refcoco, llava_instruct_150k, ReasonSeg|train, ...). It has
a list of records (``len(source)``), loads record ``i`` with the item's generator into a
:class:`RawSample`, and raises :class:`SampleProblem` for a record it cannot use.
``inspect(i)`` validates record ``i`` without building prompts (used by ``lisa data check``) and
returns how many samples (questions) it provides.

A :class:`FamilyDataset` (sem_seg, refer_seg, vqa, reason_seg) picks a source uniformly, then a
record uniformly, like the original; a record with a problem is counted and another one drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..preprocess import VisionInput, sam_preprocess
from .masks import IGNORE_LABEL
from .problems import DataError, ProblemCounter, SampleProblem
from .rng import EpochCounter, item_rng, worker_init_fn
from .templates import build_conversation

MAX_ATTEMPTS = 100


@dataclass
class RawSample:
    image_path: str
    image: np.ndarray | None  # HxWx3 uint8 RGB; None for a text-only record (LLaVA data has them)
    turns: list[list[tuple[str, str]]]  # one conversation per entry: [(user, assistant), ...]
    masks: list[np.ndarray] = field(default_factory=list)  # one HxW 0/1 mask per [SEG], in order
    label: np.ndarray | None = None  # HxW; None -> all IGNORE_LABEL
    questions: list[str] = field(default_factory=list)
    sampled_classes: list[str] = field(default_factory=list)


class Source:
    """One sub-dataset. Subclasses set ``name`` / ``family`` and implement the three methods."""

    name: str = ""
    family: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, i: int, rng: np.random.Generator, num_classes: int) -> RawSample:
        raise NotImplementedError

    def inspect(self, i: int, deep: bool = False) -> int:
        """Validate record ``i`` (``deep``: decode images and masks too); return its sample count."""
        raise NotImplementedError

    def record_path(self, i: int) -> str:
        raise NotImplementedError

    def record_length(self, i: int) -> int:
        """Length of record ``i`` for grouping by length (negative: text only); all alike by default."""
        return 1


def sample_without_replacement(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """Up to ``k`` distinct indices of ``range(n)`` (all of them, shuffled, when n <= k)."""
    return [int(v) for v in rng.choice(n, size=min(n, k), replace=False)]


def make_item(raw: RawSample, *, clip_size: int, sam_size: int, conv_type: str,
              inference: bool = False, vision: VisionInput | None = None) -> dict:
    """The item dict of the data contract from a decoded sample. ``vision`` says how the vision
    tower's input is made (default: CLIP preprocessing at ``clip_size``)."""
    vision = vision or VisionInput(clip_size)
    if raw.image is None:
        return _text_only_item(raw, vision, sam_size, conv_type, inference)
    h, w = raw.image.shape[:2]
    for m in raw.masks:
        if m.shape != (h, w):
            raise SampleProblem("size_mismatch", raw.image_path,
                                f"mask of size {m.shape} for an image of size {(h, w)}")
    sam = sam_preprocess(raw.image, sam_size)
    masks = (torch.from_numpy(np.stack([(m > 0) for m in raw.masks]).astype(np.float32))
             if raw.masks else torch.zeros((0, h, w), dtype=torch.float32))
    if raw.label is None:
        label = torch.full((h, w), IGNORE_LABEL, dtype=torch.long)
    else:
        label = torch.from_numpy(raw.label.astype(np.int64))
    return {
        "image_path": raw.image_path,
        "images": sam.pixels,
        "images_clip": vision(raw.image),
        "conversations": [build_conversation(t, conv_type) for t in raw.turns],
        "masks": masks,
        "label": label,
        "resize": tuple(sam.resize),
        "questions": list(raw.questions),
        "sampled_classes": list(raw.sampled_classes),
        "inference": inference,
    }


def _text_only_item(raw: RawSample, vision: VisionInput, sam_size: int, conv_type: str, inference: bool) -> dict:
    # As LLaVA: zero pixels stand in for the image; no <image> token uses them, and no mask is asked for.
    return {
        "image_path": raw.image_path,
        "images": torch.zeros((3, sam_size, sam_size), dtype=torch.float32),
        "images_clip": torch.zeros((3, vision.size, vision.size), dtype=torch.float32),
        "conversations": [build_conversation(t, conv_type) for t in raw.turns],
        "masks": torch.zeros((0, 1, 1), dtype=torch.float32),
        "label": torch.full((1, 1), IGNORE_LABEL, dtype=torch.long),
        "resize": (1, 1),
        "questions": list(raw.questions),
        "sampled_classes": [],
        "inference": inference,
    }


class SeededEpochDataset(torch.utils.data.Dataset):
    """``len`` = samples per epoch, an epoch number that reaches the workers, and problem counts.
    Subclasses set ``samples_per_epoch``, ``epoch_state`` and ``counter``."""

    worker_init_fn = staticmethod(worker_init_fn)  # for DataLoader(worker_init_fn=...)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch_state.set(epoch)

    def stats(self) -> dict[str, int]:
        return self.counter.stats()

    def report(self) -> str:
        """One line for the end-of-epoch log, e.g. ``data problems: missing_file=3 (e.g. ...)``."""
        return self.counter.report()


class FamilyDataset(SeededEpochDataset):
    """A training family: ``len`` = samples per epoch; ``dataset[idx]`` is a deterministic draw
    from ``item_rng(seed, rank, epoch, idx)`` (the index selects the draw, not a record)."""

    family = ""

    def __init__(self, sources: list[Source], *, samples_per_epoch: int = 10000,
                 num_classes_per_sample: int = 3, clip_size: int = 224, sam_size: int = 1024,
                 conv_type: str = "llava_v1", use_mm_start_end: bool = True, seed: int = 0,
                 rank: int = 0, counter: ProblemCounter | None = None, strict: bool = False,
                 vision: VisionInput | None = None):
        sources = [s for s in sources if len(s) > 0]
        if not sources:
            raise DataError(f"{self.family}: none of the requested sub-datasets has any record")
        self.sources = sources
        self.samples_per_epoch = int(samples_per_epoch)
        self.num_classes_per_sample = int(num_classes_per_sample)
        self.clip_size, self.sam_size = int(clip_size), int(sam_size)
        self.vision = vision or VisionInput(self.clip_size)
        self.conv_type = conv_type
        # Conversations keep the bare "<image>"; collation wraps it (idempotently) when asked to.
        self.use_mm_start_end = use_mm_start_end
        self.seed, self.rank = int(seed), int(rank)
        self.counter = counter if counter is not None else ProblemCounter(strict=strict)
        self.epoch_state = EpochCounter()

    def __getitem__(self, idx: int) -> dict:
        return self.sample(item_rng(self.seed, self.rank, self.epoch_state.value, idx))

    def sample(self, rng: np.random.Generator) -> dict:
        for _ in range(MAX_ATTEMPTS):
            source = self.sources[int(rng.integers(len(self.sources)))]
            i = int(rng.integers(len(source)))
            try:
                raw = source.load(i, rng, self.num_classes_per_sample)
                return make_item(raw, clip_size=self.clip_size, sam_size=self.sam_size,
                                 conv_type=self.conv_type, vision=self.vision)
            except SampleProblem as problem:
                self.counter.add(problem)
        raise DataError(f"{self.family}: no usable sample in {MAX_ATTEMPTS} draws from "
                        f"{[s.name for s in self.sources]}; {self.counter.report()}")
