"""DeepSpeed checkpoints in ``runs/<exp>/ckpt_model`` that are either complete or ignored.

Layout: ``ckpt_model/global_step{N}/`` (DeepSpeed's files, ``rng_state_rank{r}.pt`` per rank,
``lisa_state.json`` with the loop position, and a ``COMPLETE`` marker written last), ``latest``
(the newest complete tag, as DeepSpeed and ``zero_to_fp32.py`` expect) and ``best`` (the tag with
the best validation gIoU). Markers are written by rank 0 after every rank has finished writing,
each through a temporary file and ``os.replace``, so a run killed at any moment leaves either the
previous checkpoints or a complete new one; a half-written tag folder has no ``COMPLETE`` and is
ignored on resume and deleted.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from . import dist

log = logging.getLogger("lisa.train")

TAG_RE = re.compile(r"^global_step(\d+)$")
COMPLETE = "COMPLETE"
STATE_FILE = "lisa_state.json"


def tag_for(step: int) -> str:
    return f"global_step{int(step)}"


def atomic_write(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def is_complete(tag_dir: Path) -> bool:
    return (Path(tag_dir) / COMPLETE).is_file() and (Path(tag_dir) / STATE_FILE).is_file()


def complete_tags(ckpt_dir: Path) -> list[tuple[int, str]]:
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    out = []
    for p in ckpt_dir.iterdir():
        m = TAG_RE.match(p.name)
        if m and p.is_dir() and is_complete(p):
            out.append((int(m.group(1)), p.name))
    return sorted(out)


def read_marker(ckpt_dir: Path, name: str) -> str | None:
    p = Path(ckpt_dir) / name
    if not p.is_file():
        return None
    tag = p.read_text(encoding="utf-8").strip()
    return tag if tag and is_complete(Path(ckpt_dir) / tag) else None


def remove_incomplete(ckpt_dir: Path) -> list[str]:
    """Delete tag folders without the COMPLETE marker (left by a killed run). Rank 0 only."""
    removed = []
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return removed
    for p in ckpt_dir.iterdir():
        if TAG_RE.match(p.name) and p.is_dir() and not is_complete(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def locate(path: str | Path, tag: str | None = None) -> tuple[Path, str] | None:
    """``(ckpt_dir, tag)`` for a run folder, a ``ckpt_model`` folder or a tag folder; the given tag,
    or else the newest complete one. None when there is no complete checkpoint."""
    path = Path(path)
    if TAG_RE.match(path.name) and path.is_dir():
        return (path.parent, path.name) if is_complete(path) else None
    if (path / "ckpt_model").is_dir():
        path = path / "ckpt_model"
    if tag is not None:
        if tag in ("best", "latest"):
            found = read_marker(path, tag)
            return (path, found) if found else None
        return (path, tag) if is_complete(path / tag) else None
    tags = complete_tags(path)
    return (path, tags[-1][1]) if tags else None


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
    torch.save(rng_state(), tag_dir / f"rng_state_rank{dist.rank()}.pt")
    dist.barrier()
    if dist.is_main():
        atomic_write(tag_dir / STATE_FILE, json.dumps(state, indent=2))
        atomic_write(tag_dir / COMPLETE, tag + "\n")
        atomic_write(ckpt_dir / "latest", tag)
        survivors = {tag} | {t for t in keep if t}
        for _, other in complete_tags(ckpt_dir):
            if other not in survivors:
                shutil.rmtree(ckpt_dir / other, ignore_errors=True)
    dist.barrier()
    return tag


def mark_best(ckpt_dir: Path, tag: str) -> None:
    if dist.is_main():
        atomic_write(Path(ckpt_dir) / "best", tag)


def load(engine, ckpt_dir: Path, tag: str) -> dict:
    """Restore module, optimizer, scheduler and this rank's RNG; returns the loop state."""
    tag_dir = Path(ckpt_dir) / tag
    load_path, _ = engine.load_checkpoint(str(ckpt_dir), tag=tag, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if load_path is None:
        raise RuntimeError(f"{tag_dir}: DeepSpeed could not load this checkpoint")
    state = json.loads((tag_dir / STATE_FILE).read_text(encoding="utf-8"))
    rng_file = tag_dir / f"rng_state_rank{dist.rank()}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
    else:
        log.warning("%s: no RNG state for rank %d (saved with another number of processes?); dropout "
                    "draws will differ from an uninterrupted run", tag_dir, dist.rank())
    if int(state.get("world_size", dist.world_size())) != dist.world_size():
        log.warning("resuming a run saved with %s processes on %d: the data order changes",
                    state.get("world_size"), dist.world_size())
    return state
