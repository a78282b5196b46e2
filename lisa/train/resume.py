"""Saving and restoring the whole training state (DeepSpeed engine, loop position, every rank's RNG)
so that a resumed run continues exactly.

The folder layout is :mod:`lisa.checkpoint.run_folder`'s. Markers are written by rank 0 after every
rank has finished writing, so a half-written tag folder has no ``COMPLETE`` and is ignored on
resume and deleted.
"""

from __future__ import annotations

import json
import logging
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

def save(engine, ckpt_dir: Path, step: int, state: dict, keep: set[str] = frozenset()) -> str:
    """Save on every rank; returns the tag. ``keep``: other tags that must survive pruning."""
    ckpt_dir = Path(ckpt_dir)
    tag = tag_for(step)
    tag_dir = ckpt_dir / tag
    if dist.is_main():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if tag_dir.exists():  # a stale folder of the same name from an earlier, abandoned run
            shutil.rmtree(tag_dir)
    dist.barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"lisa": state}, save_latest=False)
    torch.save(rng_state(), rng_file(tag_dir, dist.rank()))
    dist.barrier()
    if dist.is_main():
        atomic_write(tag_dir / STATE_FILE, json.dumps(state, indent=2))
        atomic_write(tag_dir / COMPLETE, tag + "\n")
        atomic_write(ckpt_dir / LATEST, tag)
        survivors = {tag} | {t for t in keep if t}
        for _, other in complete_tags(ckpt_dir):
            if other not in survivors:
                shutil.rmtree(ckpt_dir / other, ignore_errors=True)
    dist.barrier()
    return tag


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
