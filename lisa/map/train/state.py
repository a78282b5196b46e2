"""The run folder and its resumable training state.

Layout (``outputs/map_detection_stage2_YYYYMMDD_HHMMSS/`` by default)::

    config.json          the resolved options, the detector config, world size, library versions
    train_log.jsonl      one record per optimizer step; val_log.jsonl one per validation
    events.out.tfevents.*  TensorBoard
    epoch_N/             the detector after epoch N (config.json + model.safetensors)
    best_model/          the epoch with the best val mAP (the lowest training loss with --no_eval)
    final_model/         the detector at the end
    train_state/         what an exact resume needs: the detector, optimizer, schedule, loss scaler,
                         counters, and every process' random-number-generator states

All tensors go through ``torch.save`` of plain containers and come back with ``weights_only=True``.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..checkpoint.io import load_state, read_state_file, save_detector

STATE_DIR = "train_state"
STATE_FILE = "state.json"


def default_run_dir(stage: int) -> Path:
    return Path("outputs") / f"map_detection_stage{stage}_{time.strftime('%Y%m%d_%H%M%S')}"


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
             "numpy_pos": np_state[2], "numpy_gauss": [np_state[3], np_state[4]],
             "python": json.dumps(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(state["numpy_pos"]),
                         int(state["numpy_gauss"][0]), float(state["numpy_gauss"][1])))
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(run_dir: Path, model, optimizer, scheduler, scaler, counters: dict, rank: int,
                     is_main: bool, barrier) -> Path:
    """Every process writes its RNG state; the main one the rest. Complete once state.json exists."""
    out = Path(run_dir) / STATE_DIR
    if is_main:
        if (out / STATE_FILE).exists():
            (out / STATE_FILE).unlink()  # incomplete until rewritten below
        out.mkdir(parents=True, exist_ok=True)
    barrier()
    torch.save(rng_state(), out / f"rng_rank{rank}.pt")
    if is_main:
        save_detector(model, out / "model")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None}, out / "optimizer.pt")
    barrier()
    if is_main:
        atomic_write(out / STATE_FILE, json.dumps(counters, indent=2))
    barrier()
    return out


def has_train_state(run_dir: Path) -> bool:
    return (Path(run_dir) / STATE_DIR / STATE_FILE).is_file()


def load_train_state(run_dir: Path, model, optimizer, scheduler, scaler, rank: int, world: int) -> dict:
    src = Path(run_dir) / STATE_DIR
    if not has_train_state(run_dir):
        raise ValueError(f"--resume {run_dir}: no complete training state ({src / STATE_FILE} missing)")
    counters = json.loads((src / STATE_FILE).read_text(encoding="utf-8"))
    if counters.get("world_size") != world:
        raise ValueError(f"--resume {run_dir}: saved with {counters.get('world_size')} processes, resumed with "
                         f"{world}; an exact resume needs the same number")
    load_state(model, read_state_file(src / "model" / "model.safetensors"), str(src / "model"))
    opt = torch.load(src / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    if scaler is not None and opt.get("scaler"):
        scaler.load_state_dict(opt["scaler"])
    rng = src / f"rng_rank{rank}.pt"
    if rng.is_file():
        set_rng_state(torch.load(rng, map_location="cpu", weights_only=True))
    return counters


def publish(model, run_dir: Path, name: str, extra: dict | None = None) -> Path:
    """Write the detector to ``run_dir/name`` (replacing it atomically) with an optional info file."""
    final = Path(run_dir) / name
    tmp = Path(run_dir) / (name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_detector(model, tmp)
    if extra is not None:
        (tmp / "training.json").write_text(json.dumps(extra, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final
