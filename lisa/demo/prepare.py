"""The demo's data: the synthetic shapes set in the real ReasonSeg / LLaVA formats, written once.

``prepare_data(root, n_train, n_val, seed)`` calls the generator (``lisa data synth``) unless
``root`` already holds the same set (a ``demo_data.json`` stamp records what was written), so a
second ``lisa demo`` reuses the files.
"""

from __future__ import annotations

import json
from pathlib import Path

STAMP = "demo_data.json"


def stamped(root, name: str, request: dict, write) -> dict:
    """``write()``'s summary, or the one recorded in ``root/name`` when that stamp holds the same
    ``request`` (the files were written already)."""
    stamp = Path(root) / name
    if stamp.is_file():
        try:
            old = json.loads(stamp.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = {}
        if old.get("request") == request:
            return old["summary"]
    summary = write()
    stamp.write_text(json.dumps({"request": request, "summary": summary}, indent=2) + "\n", encoding="utf-8")
    return summary


def prepare_data(root, n_train: int, n_val: int, seed: int, progress: bool = True) -> dict:
    """Write (or reuse) the data set; returns the generator's summary."""
    from .shapes import write_dataset

    want = {"n_train": int(n_train), "n_val": int(n_val), "seed": int(seed)}
    return stamped(root, STAMP, want, lambda: write_dataset(root, n_train, n_val, seed, progress=progress))
