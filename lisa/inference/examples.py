"""Example queries that travel with a model folder: ``examples.json`` beside the weights lists
images (relative to the folder) and prompts the model answers well, for front ends to offer.

``examples.json``: ``[{"image": "examples/example_0.png", "prompt": "Can you segment ...?"}, ...]``.
The file is optional; a model folder without it simply has no examples.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

EXAMPLES_FILE = "examples.json"
EXAMPLES_DIR = "examples"


def model_examples(model_dir) -> list[list[str]]:
    """``[[image path, prompt], ...]`` from ``model_dir/examples.json``; entries whose image is missing
    (or that would read outside the folder) are left out."""
    folder = Path(model_dir)
    path = folder / EXAMPLES_FILE
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable examples file ({e})") from e
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of {{'image', 'prompt'}} objects")
    root = folder.resolve()
    rows = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) \
                or not isinstance(entry.get("prompt"), str):
            raise ValueError(f"{path}: entry {k} needs an 'image' and a 'prompt' string")
        image = (folder / entry["image"]).resolve()
        if root in image.parents and image.is_file():
            rows.append([str(image), entry["prompt"]])
    return rows


def write_examples(model_dir, rows: list[list[str]] | list[tuple[str, str]]) -> Path:
    """Copy each ``(image path, prompt)``'s image into ``model_dir/examples/`` and write ``examples.json``."""
    folder = Path(model_dir)
    out = folder / EXAMPLES_DIR
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for image, prompt in rows:
        src = Path(image)
        dst = out / src.name
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        entries.append({"image": f"{EXAMPLES_DIR}/{src.name}", "prompt": prompt})
    path = folder / EXAMPLES_FILE
    path.write_text(json.dumps(entries, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
