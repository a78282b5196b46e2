"""Epochs as passes over the data (LLaVA's training), instead of LISA's draws with replacement.

Every epoch reads each record of the training families exactly once, in a fresh order seeded by
``(seed, epoch)``. All ranks compute the same global order; micro-step ``i`` of rank ``r`` reads
the ``batch_size`` records at global positions ``(i * world + r) * batch_size`` onwards, so the
ranks split every global micro-batch between them and a resumed run picks up at the same record.
An epoch is one pass by default (its last step may be short); with an explicit number of steps
per epoch it is exactly that many global micro-batches, continuing into a new shuffled pass when
one runs out.

``group_by_modality_length`` (LLaVA's option of that name): records with an image and text-only
records are never mixed within a global micro-batch, and each global micro-batch holds records of
similar length (longest first, so ranks get comparable loads): groups are formed from a shuffled
order per modality, the groups are shuffled, and the incomplete remainders of both modalities go
last. The length of a record is the word count of its conversation (what LLaVA uses).
"""

from __future__ import annotations

import math

import numpy as np

from .base import MAX_ATTEMPTS, SeededEpochDataset, make_item
from .problems import DataError, SampleProblem
from .rng import EpochCounter, item_rng


def pass_order(lengths: list[int], rng: np.random.Generator, group_size: int, group_by_length: bool) -> list[int]:
    """One pass: a permutation of ``range(len(lengths))``; ``lengths`` < 0 mark text-only records."""
    n = len(lengths)
    if not group_by_length:
        return [int(i) for i in rng.permutation(n)]
    full, rest = [], []
    for modality in (True, False):
        members = np.asarray([i for i in range(n) if (lengths[i] >= 0) == modality], dtype=np.int64)
        members = members[rng.permutation(len(members))]
        for k in range(0, len(members), group_size):
            group = sorted(members[k:k + group_size].tolist(), key=lambda i: -abs(lengths[i]))
            (full if len(group) == group_size else rest).append(group)
    order = [full[int(g)] for g in rng.permutation(len(full))]
    out = [i for group in order for i in group]
    return out + sorted((i for group in rest for i in group), key=lambda i: -abs(lengths[i]))


class DataPassDataset(SeededEpochDataset):
    """The records of ``families`` (their sources, every record), read once per epoch.

    ``len`` is this rank's number of items in the epoch; ``dataset[k]`` is its k-th item.
    """

    def __init__(self, families, *, batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0,
                 group_by_length: bool = False, steps_per_epoch: int = 0, grad_accumulation_steps: int = 1):
        self.families = families
        self.records = [(f, s, i) for f, fam in enumerate(families) for s, src in enumerate(fam.sources)
                        for i in range(len(src))]
        if not self.records:
            raise DataError("no training record to pass over")
        self.lengths = [families[f].sources[s].record_length(i) for f, s, i in self.records]
        self.batch_size, self.world_size, self.rank = int(batch_size), int(world_size), int(rank)
        self.seed = int(seed)
        self.group_by_length = bool(group_by_length)
        self.grad_accumulation_steps = int(grad_accumulation_steps)
        per_step = self.batch_size * self.world_size * self.grad_accumulation_steps
        self.steps_per_epoch = int(steps_per_epoch) or math.ceil(len(self.records) / per_step)
        # a derived epoch is one pass; an explicit one is that many global micro-batches
        self.limit = len(self.records) if not steps_per_epoch else self.steps_per_epoch * per_step
        self.counter = families[0].counter
        self.epoch_state = EpochCounter()
        self._orders: dict[tuple[int, int], list[int]] = {}

    @property
    def samples_per_epoch(self) -> int:
        group = self.world_size * self.batch_size
        full, rem = divmod(self.limit, group)
        return full * self.batch_size + min(max(rem - self.rank * self.batch_size, 0), self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._orders = {}

    def global_position(self, k: int) -> int:
        micro, j = divmod(int(k), self.batch_size)
        return (micro * self.world_size + self.rank) * self.batch_size + j

    def record_at(self, g: int) -> int:
        """The record read at global position ``g`` of the current epoch."""
        n = len(self.records)
        p, j = divmod(int(g), n)
        key = (self.epoch_state.value, p)
        if key not in self._orders:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
                [2, self.seed & 0xFFFFFFFF, key[0], p])))
            self._orders[key] = pass_order(self.lengths, rng, self.world_size * self.batch_size,
                                           self.group_by_length)
        return self._orders[key][j]

    def __getitem__(self, k: int) -> dict:
        g = self.global_position(k)
        for attempt in range(MAX_ATTEMPTS):
            f, s, i = self.records[self.record_at(g + attempt)]
            family = self.families[f]
            try:
                # the record's own draws (classes, questions) depend on where it is read, not on the rank
                raw = family.sources[s].load(i, item_rng(self.seed, 0, self.epoch_state.value, g),
                                             family.num_classes_per_sample)
                item = make_item(raw, clip_size=family.clip_size, sam_size=family.sam_size,
                                 conv_type=family.conv_type, vision=family.vision)
                item["inference"] = False
                return item
            except SampleProblem as problem:
                # an unusable record is counted and the next one of the order is read in its place
                self.counter.add(problem)
        raise DataError(f"no usable record in {MAX_ATTEMPTS} positions from {g}; {self.counter.report()}")
