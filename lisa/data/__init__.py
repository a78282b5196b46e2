"""Training and evaluation data: readers for the original LISA layout, mixing, collation, checks.

Public entry points:
- :func:`build_train_dataset` (``HybridDataset``) and :func:`build_val_dataset` (``ValDataset``);
- :func:`collate` / :func:`make_collate_fn` for ``DataLoader(collate_fn=...)``;
- :func:`worker_init_fn` for ``DataLoader(worker_init_fn=...)``;
- :class:`DataError` (fatal problems) and the per-kind problem counts via ``dataset.stats()``.
"""

from .hybrid import FAMILIES, HybridDataset, build_train_dataset
from .problems import KINDS, DataError, ProblemCounter, SampleProblem
from .rng import item_rng, worker_init_fn
from .validation import ValDataset, build_val_dataset


def __getattr__(name):
    # collate imports the tokenizer helpers (transformers); load it only when asked for.
    if name in ("collate", "make_collate_fn"):
        from . import collate as _collate_module

        return getattr(_collate_module, name)
    raise AttributeError(f"module 'lisa.data' has no attribute {name!r}")


__all__ = ["FAMILIES", "HybridDataset", "build_train_dataset", "ValDataset", "build_val_dataset",
           "DataError", "SampleProblem", "ProblemCounter", "KINDS", "item_rng", "worker_init_fn",
           "collate", "make_collate_fn"]
