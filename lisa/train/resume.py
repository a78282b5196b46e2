"""Saving and restoring the whole training state (DeepSpeed engine, loop position, every rank's RNG)
so that a resumed run continues exactly.

The folder layout is :mod:`lisa.checkpoint.run_folder`'s. Markers are written by rank 0 after every
rank has finished writing, so a half-written tag folder has no ``COMPLETE`` and is ignored on
resume and deleted.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from .. import dist
from ..checkpoint.run_folder import BEST, COMPLETE, LATEST, STATE_FILE, atomic_write, complete_tags, rng_file, tag_for

log = logging.getLogger("lisa.train")


# ---- RNG state (kept in plain tensors so it loads with weights_only=True) ---------------------

def rng_state() -> dict:
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]), "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python_version": int(py_version), "python_state": torch.tensor(py_state, dtype=torch.int64),
        "python_gauss": py_gauss,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    random.setstate((state["python_version"], tuple(int(v) for v in state["python_state"].tolist()),
                     state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- save / load ----------------------------------------------------------------------------

class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (e.g. the disk is full); the previous one is intact."""


def save(engine, ckpt_dir: Path, step: int, state: dict, keep: set[str] = frozenset()) -> str:
    """Save on every rank; returns the tag. ``keep``: other tags that must survive pruning.

    Every file is synced to disk before ``COMPLETE`` is written, and an old checkpoint loses its
    ``COMPLETE`` before its files are deleted, so a crash at any point leaves each tag folder either
    complete or unmarked. A failed write (full disk, ...) removes the half-written folder and raises
    :class:`CheckpointSaveError` on every rank, saying what happened."""
    ckpt_dir = Path(ckpt_dir)
    tag = tag_for(step)
    tag_dir = ckpt_dir / tag
    done = complete_tags(ckpt_dir)
    previous = done[-1][1] if done else None
    if dist.is_main():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if tag_dir.exists():  # a stale folder of the same name from an earlier, abandoned run
            shutil.rmtree(tag_dir)
    dist.barrier()

    def write_files():
        engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"lisa": state}, save_latest=False)
        torch.save(rng_state(), rng_file(tag_dir, dist.rank()))
        fsync_tree(tag_dir)

    _all_or_none(write_files, tag_dir, ckpt_dir, previous)

    def mark():
        if dist.is_main():
            atomic_write(tag_dir / STATE_FILE, json.dumps(state, indent=2))
            atomic_write(tag_dir / COMPLETE, tag + "\n")
            atomic_write(ckpt_dir / LATEST, tag)

    _all_or_none(mark, tag_dir, ckpt_dir, previous)
    if dist.is_main():
        survivors = {tag} | {t for t in keep if t}
        for _, other in complete_tags(ckpt_dir):
            if other not in survivors:
                unmark(ckpt_dir / other)
                shutil.rmtree(ckpt_dir / other, ignore_errors=True)
    dist.barrier()
    return tag


def _all_or_none(step, tag_dir: Path, ckpt_dir: Path, previous: str | None) -> None:
    """Run ``step`` on every rank; if it failed on any, all ranks drop ``tag_dir`` and raise."""
    failure = None
    try:
        step()
    except Exception as e:  # noqa: BLE001 - turned into one explanation below, on every rank
        failure = e
    free = _free_bytes(ckpt_dir)
    failed = dist.all_reduce_sum(torch.tensor([0.0 if failure is None else 1.0]))
    if float(failed[0]) == 0:
        return
    if dist.is_main():
        shutil.rmtree(tag_dir, ignore_errors=True)  # a half-written tag is never resumed; free its space
    dist.barrier()
    raise CheckpointSaveError(save_failure_message(failure, tag_dir, previous, free)) from failure


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


DISK_FULL_BYTES = 64 * 1024 * 1024  # a write that failed with less than this left free ran out of disk


def is_disk_full(error: BaseException | None, free: int | None) -> bool:
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return error is not None and free is not None and free < DISK_FULL_BYTES


def save_failure_message(error: BaseException | None, tag_dir: Path, previous: str | None, free: int | None) -> str:
    kept = (f"the previous checkpoint {tag_dir.parent / previous} is intact" if previous
            else "there is no earlier checkpoint")
    if error is None:
        return f"cannot save {tag_dir}: another process failed to write its part; {kept}"
    if is_disk_full(error, free):
        shown = "" if free is None else f" ({free / 2**20:.0f} MiB free)"
        return (f"cannot save {tag_dir}: the disk is full{shown}. The partial checkpoint was removed and "
                f"{kept}; free some space and run the same command with --auto_resume to continue.")
    return f"cannot save {tag_dir}: {type(error).__name__}: {error}. The partial checkpoint was removed and {kept}."


def fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` (and the folders) to disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not sync directories
        pass
    finally:
        os.close(fd)


def unmark(tag_dir: Path) -> None:
    """Remove ``COMPLETE`` (durably) before a tag's files go, so a half-deleted tag is never resumed."""
    marker = Path(tag_dir) / COMPLETE
    try:
        marker.unlink()
    except FileNotFoundError:
        return
    fsync_dir(Path(tag_dir))


def mark_best(ckpt_dir: Path, tag: str) -> None:
    if dist.is_main():
        atomic_write(Path(ckpt_dir) / BEST, tag)


def load(engine, ckpt_dir: Path, tag: str) -> dict:
    """Restore module, optimizer, scheduler and this rank's RNG; returns the loop state."""
    tag_dir = Path(ckpt_dir) / tag
    load_path, _ = engine.load_checkpoint(str(ckpt_dir), tag=tag, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if load_path is None:
        raise RuntimeError(f"{tag_dir}: DeepSpeed could not load this checkpoint")
    state = json.loads((tag_dir / STATE_FILE).read_text(encoding="utf-8"))
    path = rng_file(tag_dir, dist.rank())
    if path.is_file():
        set_rng_state(torch.load(path, map_location="cpu", weights_only=True))
    else:
        log.warning("%s: no RNG state for rank %d (saved with another number of processes?); dropout "
                    "draws will differ from an uninterrupted run", tag_dir, dist.rank())
    if int(state.get("world_size", dist.world_size())) != dist.world_size():
        log.warning("resuming a run saved with %s processes on %d: the data order changes",
                    state.get("world_size"), dist.world_size())
    return state
