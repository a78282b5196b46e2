"""Keep freed CPU memory for reuse instead of handing it back to the OS after every large tensor.

glibc serves allocations above its mmap threshold (at most 32 MB by default) with fresh ``mmap``
pages and unmaps them on free, so every large temporary (a SAM attention bias band, an MLP
activation, a batch of activations in training) pays page faults on first touch, again and
again. With the threshold and the trim threshold raised, freed blocks stay in the heap and the
next tensor of that size reuses them: the medium SAM encoder measured 20-26% less CPU time, with
bit-identical results. The process's resident memory stays at its peak instead of shrinking back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_done: bool | None = None


def reuse_freed_memory(threshold: int = 1 << 30) -> bool:
    """Raise glibc's mmap and trim thresholds (once per process); False where there is no glibc
    or it refused (other C libraries keep their own policy)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    # glibc versions that cap the mmap threshold at 32 MB refuse a larger value: fall back to the cap
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) or bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20))
    _done = ok and bool(libc.mallopt(M_TRIM_THRESHOLD, threshold))
    return _done
