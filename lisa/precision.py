"""Precision names (``--precision fp32|bf16|fp16``) and the torch dtypes they stand for."""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = tuple(DTYPES)  # the flag's choices, in --help order
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # torch's names work too


def to_dtype(precision) -> torch.dtype | None:
    """The dtype of a precision name (or torch's name for it); None and dtypes pass through."""
    if precision is None or isinstance(precision, torch.dtype):
        return precision
    name = _ALIASES.get(str(precision), str(precision))
    if name not in DTYPES:
        raise ValueError(f"unknown precision {precision!r}; choose fp32, bf16 or fp16")
    return DTYPES[name]


def default_precision(on_cuda: bool | None = None) -> str:
    """bf16 on CUDA, fp32 elsewhere (CPU and Apple GPUs: half precision is slow or unsupported there)."""
    if on_cuda is None:
        on_cuda = torch.cuda.is_available()
    return "bf16" if on_cuda else "fp32"


def half_dtype(precision) -> torch.dtype | None:
    """The 16-bit dtype of ``bf16`` / ``fp16``; None for ``fp32`` (or None): nothing to cast."""
    dtype = to_dtype(precision)
    return None if dtype in (None, torch.float32) else dtype
