"""The map detector's tests run on small tensors: one intra-op thread is faster there than two, and far
faster on a shared machine."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def one_torch_thread():
    """torch's intra-op thread count set to 1 inside, restored to what it was on the way out."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
