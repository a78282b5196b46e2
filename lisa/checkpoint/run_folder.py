"""The layout of a training run folder, shared by training, evaluation and export.

``runs/<exp>/`` holds ``config.json`` (the resolved flags), ``model_config.json`` (the model config,
``[SEG]`` id, base folder, precision and LoRA settings: what export needs to rebuild the model),
``tokenizer/``, ``metrics.json``, ``train_log.jsonl``, ``val_log.jsonl``, ``best.json`` and
``ckpt_model/``. In ``ckpt_model/`` every ``global_step{N}/``
tag folder holds DeepSpeed's files, ``rng_state_rank{r}.pt`` per rank, ``lisa_state.json`` with
the loop position and a ``COMPLETE`` marker written last; ``latest`` names the newest complete tag
(as DeepSpeed and ``zero_to_fp32.py`` expect) and ``best`` the tag with the best validation gIoU.
Markers go through a temporary file and ``os.replace``, so a run killed at any moment leaves either
the previous checkpoints or a complete new one; a tag folder without ``COMPLETE`` is ignored.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

RUN_MODEL_FILE = "model_config.json"
RUN_CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
TRAIN_LOG = "train_log.jsonl"  # one JSON line per optimizer step
VAL_LOG = "val_log.jsonl"  # one JSON line per validation: the learning curve against training time
BEST_FILE = "best.json"
TOKENIZER_DIR = "tokenizer"
CKPT_DIR = "ckpt_model"
TAG_RE = re.compile(r"^global_step(\d+)$")
COMPLETE = "COMPLETE"
STATE_FILE = "lisa_state.json"
LATEST = "latest"
BEST = "best"


def tag_for(step: int) -> str:
    return f"global_step{int(step)}"


def rng_file(tag_dir: Path, rank: int) -> Path:
    return Path(tag_dir) / f"rng_state_rank{int(rank)}.pt"


def atomic_write(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # the rename itself reaches the disk only with its folder
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some file systems cannot sync a folder
        pass


def drop_steps_after(log_file: Path, step: int) -> int:
    """Remove the lines of a JSON-lines log (``train_log.jsonl``, ``val_log.jsonl``) whose ``step`` is
    past ``step``: a run resumed from that checkpoint writes them again. Returns how many went."""
    import json

    log_file = Path(log_file)
    if not log_file.is_file():
        return 0
    kept, dropped = [], 0
    for line in log_file.read_text(encoding="utf-8").splitlines():
        try:
            after = int(json.loads(line).get("step", 0)) > step
        except (ValueError, AttributeError, TypeError):  # a line cut short by the kill
            after = True
        if after:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        atomic_write(log_file, "".join(line + "\n" for line in kept))
    return dropped


def is_run_dir(folder: Path) -> bool:
    return (Path(folder) / RUN_MODEL_FILE).is_file()


def run_dir_near(folder: Path) -> Path | None:
    """The run folder that holds ``folder`` (itself, its parent or grandparent: a run folder, its
    ``ckpt_model`` or one tag folder), or None."""
    folder = Path(folder)
    for cand in (folder, folder.parent, folder.parent.parent):
        if is_run_dir(cand):
            return cand
    return None


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
    if (path / CKPT_DIR).is_dir():
        path = path / CKPT_DIR
    if tag is not None:
        if tag in (BEST, LATEST):
            found = read_marker(path, tag)
            return (path, found) if found else None
        return (path, tag) if is_complete(path / tag) else None
    tags = complete_tags(path)
    return (path, tags[-1][1]) if tags else None
