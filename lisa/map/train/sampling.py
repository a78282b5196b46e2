"""Which samples each process reads at each micro-step: one shuffled order per epoch, cut into global
batches, each global batch into micro-batches and those into per-process slices.

The order depends only on (seed, epoch), so 2 processes with batch 1 see exactly the global batches
of 1 process with batch 2, and a resumed run continues with the batches the interrupted one would
have read. Loader workers are seeded from (seed, epoch, rank, worker).
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


def steps_per_epoch(num_samples: int, batch_size: int, world: int, accumulation: int) -> int:
    global_batch = batch_size * world * accumulation
    if num_samples < global_batch:
        raise ValueError(f"the training set has {num_samples} samples, fewer than one global batch "
                         f"({batch_size} per process x {world} processes x {accumulation} accumulation steps)")
    return num_samples // global_batch


class GlobalBatchSampler(Sampler):
    def __init__(self, num_samples: int, batch_size: int, world: int, rank: int, accumulation: int, seed: int,
                 epoch: int, start_step: int = 0, shuffle: bool = True):
        self.n, self.batch, self.world, self.rank, self.accum = num_samples, batch_size, world, rank, accumulation
        self.seed, self.epoch, self.start_step, self.shuffle = seed, epoch, start_step, shuffle
        self.steps = steps_per_epoch(num_samples, batch_size, world, accumulation)

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.accum

    def __iter__(self):
        order = self.order()
        per_micro = self.batch * self.world
        for step in range(self.start_step, self.steps):
            for a in range(self.accum):
                base = (step * self.accum + a) * per_micro + self.rank * self.batch
                yield order[base: base + self.batch]


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def epoch_loader(dataset, collate_fn, *, batch_size: int, world: int, rank: int, accumulation: int, seed: int,
                 epoch: int, start_step: int = 0, num_workers: int = 0) -> DataLoader:
    sampler = GlobalBatchSampler(len(dataset), batch_size, world, rank, accumulation, seed, epoch, start_step)
    g = torch.Generator().manual_seed(((seed * 1000 + epoch) * 1000 + rank) * 1000 + start_step)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
                      worker_init_fn=_seed_worker, generator=g, persistent_workers=False)
