"""Seeding of every random draw in the data layer.

The original samples with the global ``random`` / ``np.random`` state, which nothing seeds: the
DataLoader base seed comes from torch's default generator, identical on every rank, so all GPUs can
draw the same samples (**bug**). Here each item gets its own generator derived from
``(seed, rank, epoch, idx)``:

- two ranks never share a stream (rank is part of the key);
- ``dataset[idx]`` is the same whichever DataLoader worker computes it and however many workers
  there are, so a run is reproducible and changing ``--workers`` does not change the data;
- every epoch draws fresh samples (``set_epoch``).

The worker id is not needed in the per-item key (indices are already unique within a rank), but
:func:`worker_init_fn` seeds the global ``random``, ``numpy`` and ``torch`` generators of each worker
from ``(seed, rank, worker, epoch)`` so code outside the data layer that draws from them does not
repeat across workers or ranks either.
"""

from __future__ import annotations

import random

import numpy as np
import torch

_ITEM, _WORKER = 0, 1  # stream tags keep per-item and per-worker seeds apart


def item_rng(seed: int, rank: int, epoch: int, idx: int) -> np.random.Generator:
    """The generator for item ``idx`` of ``epoch`` on ``rank``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [_ITEM, int(seed) & 0xFFFFFFFF, int(rank), int(epoch), int(idx)])))


def worker_seed(seed: int, rank: int, worker: int, epoch: int) -> int:
    ss = np.random.SeedSequence([_WORKER, int(seed) & 0xFFFFFFFF, int(rank), int(worker), int(epoch)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


class EpochCounter:
    """An epoch number shared with DataLoader workers (persistent ones included)."""

    def __init__(self, epoch: int = 0):
        self._value = torch.tensor([int(epoch)], dtype=torch.int64).share_memory_()

    @property
    def value(self) -> int:
        return int(self._value[0])

    def set(self, epoch: int) -> None:
        self._value[0] = int(epoch)


def worker_init_fn(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: seed the worker's global generators per rank and worker."""
    info = torch.utils.data.get_worker_info()
    dataset = info.dataset if info is not None else None
    seed = getattr(dataset, "seed", 0)
    rank = getattr(dataset, "rank", 0)
    epoch_state = getattr(dataset, "epoch_state", None)
    epoch = epoch_state.value if epoch_state is not None else 0
    s = worker_seed(seed, rank, worker_id, epoch)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
