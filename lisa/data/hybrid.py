"""The training mixture: ``--dataset "sem_seg||refer_seg||vqa||reason_seg"`` at ``--sample_rates "9,3,3,1"``.

``dataset[idx]`` draws a family with probability rate / sum(rates), then a sample from it, all from
the item's generator ``item_rng(seed, rank, epoch, idx)`` (see :mod:`lisa.data.rng`). One
:class:`ProblemCounter` is shared by all families; ``stats()`` reports it.
"""

from __future__ import annotations

import os

import numpy as np

from .base import FamilyDataset, SeededEpochDataset
from .problems import DataError, ProblemCounter
from .reason_seg import DEFAULT_REASON_SEG_DATA, ReasonSegDataset
from .refer_seg import DEFAULT_REFER_SEG_DATA, ReferSegDataset
from .rng import EpochCounter, item_rng
from .sem_seg import DEFAULT_SEM_SEG_DATA, SemSegDataset
from .vqa import DEFAULT_VQA_DATA, VQADataset

FAMILIES = ("sem_seg", "refer_seg", "vqa", "reason_seg")

# The original train_ds.py defaults.
DEFAULTS = {
    "dataset_dir": "./dataset",
    "dataset": "sem_seg||refer_seg||vqa||reason_seg",
    "sample_rates": "9,3,3,1",
    "sem_seg_data": DEFAULT_SEM_SEG_DATA,
    "refer_seg_data": DEFAULT_REFER_SEG_DATA,
    "vqa_data": DEFAULT_VQA_DATA,
    "reason_seg_data": DEFAULT_REASON_SEG_DATA,
    "explanatory": 0.1,
    "num_classes_per_sample": 3,
    "image_folder": None,
    "strict_data": False,
    "conv_type": "llava_v1",
    "use_mm_start_end": True,
    "steps_per_epoch": 500,
    "batch_size": 2,
    "grad_accumulation_steps": 10,
    "seed": 0,
}


def parse_rates(sample_rates: str, n: int) -> np.ndarray:
    try:
        rates = np.asarray([float(r) for r in str(sample_rates).split(",")], dtype=np.float64)
    except ValueError:
        raise DataError(f"--sample_rates {sample_rates!r}: expected comma-separated numbers") from None
    if len(rates) != n:
        raise DataError(f"--sample_rates {sample_rates!r} has {len(rates)} values for {n} datasets")
    if (rates < 0).any() or rates.sum() <= 0:
        raise DataError(f"--sample_rates {sample_rates!r}: rates must be >= 0 and not all 0")
    return rates / rates.sum()


class HybridDataset(SeededEpochDataset):
    """Draws each item from one family, chosen by the normalised sample rates."""

    def __init__(self, families: list[FamilyDataset], rates, *, samples_per_epoch: int,
                 seed: int = 0, rank: int = 0, counter: ProblemCounter | None = None):
        if len(families) != len(rates):
            raise DataError(f"{len(families)} datasets but {len(rates)} sample rates")
        self.families = families
        self.names = [f.family for f in families]
        self.rates = np.asarray(rates, dtype=np.float64) / float(np.sum(rates))
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed, self.rank = int(seed), int(rank)
        self.counter = counter if counter is not None else families[0].counter
        self.epoch_state = EpochCounter()

    def family_index(self, rng: np.random.Generator) -> int:
        return int(rng.choice(len(self.families), p=self.rates))

    def __getitem__(self, idx: int) -> dict:
        rng = item_rng(self.seed, self.rank, self.epoch_state.value, idx)
        item = self.families[self.family_index(rng)].sample(rng)
        item["inference"] = False
        return item


def _get(args, name):
    if isinstance(args, dict):
        return args.get(name, DEFAULTS.get(name))
    return getattr(args, name, DEFAULTS.get(name))


def build_family(name: str, args, **common) -> FamilyDataset:
    root = _get(args, "dataset_dir")
    if name == "sem_seg":
        return SemSegDataset(root, _get(args, "sem_seg_data"), **common)
    if name == "refer_seg":
        return ReferSegDataset(root, _get(args, "refer_seg_data"), **common)
    if name == "vqa":
        return VQADataset(root, _get(args, "vqa_data"), image_folder=_get(args, "image_folder"), **common)
    if name == "reason_seg":
        return ReasonSegDataset(root, _get(args, "reason_seg_data"),
                                explanatory=float(_get(args, "explanatory")), **common)
    raise DataError(f"unknown --dataset entry {name!r}; expected some of {FAMILIES}")


def _needs_dataset_dir(name: str, args) -> bool:
    """Whether family ``name`` reads anything under ``--dataset_dir`` (VQA data given as file paths
    with its ``--image_folder`` does not)."""
    if name != "vqa":
        return True
    entries = [n for n in str(_get(args, "vqa_data")).split("||") if n]
    from .vqa import vqa_json_path

    return _get(args, "image_folder") is None or any(vqa_json_path("", n) != n for n in entries)


def build_train_dataset(args, *, clip_size: int = 224, sam_size: int | None = None,
                        rank: int | None = None, samples_per_epoch: int | None = None,
                        counter: ProblemCounter | None = None, vision=None) -> HybridDataset:
    """The training mixture from train_ds-style arguments (an argparse namespace or a dict).

    Reads ``dataset_dir, dataset, sample_rates, sem_seg_data, refer_seg_data, vqa_data,
    reason_seg_data, explanatory, num_classes_per_sample, image_folder, strict_data, conv_type,
    use_mm_start_end, seed`` and, for the epoch length ``steps_per_epoch * batch_size *
    grad_accumulation_steps``, those three (missing ones take the original defaults).
    ``sam_size`` defaults to ``args.image_size`` (else 1024); ``rank`` to ``args.rank`` /
    ``args.local_rank`` (else 0). ``vision`` (a :class:`lisa.preprocess.VisionInput`) says how the
    vision tower's input is made (default: CLIP preprocessing at ``clip_size``).
    """
    names = [n for n in str(_get(args, "dataset")).split("||") if n]
    if not os.path.isdir(_get(args, "dataset_dir")) and any(_needs_dataset_dir(n, args) for n in names):
        raise DataError(f"--dataset_dir {_get(args, 'dataset_dir')!r} is not a folder")
    if sam_size is None:
        sam_size = int(_get(args, "image_size") or 1024)
    if rank is None:
        rank = _get(args, "rank")
        rank = int(rank if rank is not None else (_get(args, "local_rank") or 0))
    if samples_per_epoch is None:
        samples_per_epoch = (int(_get(args, "steps_per_epoch")) * int(_get(args, "batch_size"))
                             * int(_get(args, "grad_accumulation_steps")))
    seed = int(_get(args, "seed") or 0)
    counter = counter or ProblemCounter(strict=bool(_get(args, "strict_data")))
    common = dict(samples_per_epoch=samples_per_epoch,
                  num_classes_per_sample=int(_get(args, "num_classes_per_sample")),
                  clip_size=clip_size, sam_size=sam_size, conv_type=_get(args, "conv_type"),
                  use_mm_start_end=bool(_get(args, "use_mm_start_end")), seed=seed, rank=rank,
                  counter=counter, vision=vision)
    rates = parse_rates(_get(args, "sample_rates"), len(names))
    keep = [i for i, r in enumerate(rates) if r > 0]  # a family at rate 0 is not even loaded
    families = [build_family(names[i], args, **common) for i in keep]
    return HybridDataset(families, rates[keep], samples_per_epoch=samples_per_epoch, seed=seed,
                         rank=rank, counter=counter)
