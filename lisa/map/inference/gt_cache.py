"""The GT cache of a split for training, prediction and evaluation: read it where it is, build it (with
a message) where it is missing."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import MapDataError


def gt_cache_path(dataroot, version: str, split: str, split_file: str | None = None,
                  cache_dir: str | None = None) -> Path:
    """``CACHE_DIR/gt_cache_{version}_{split}[_{split file digest}].npz`` (default CACHE_DIR:
    ``DATAROOT/map_gt_cache``); the digest keeps caches of different custom splits apart."""
    folder = Path(cache_dir) if cache_dir else Path(dataroot) / "map_gt_cache"
    name = f"gt_cache_{version}_{split}"
    if split_file:
        path = Path(split_file)
        if not path.is_file():
            raise MapDataError(f"--split_file {path} does not exist")
        name += "_" + hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    return folder / f"{name}.npz"


def load_or_build_gt(dataroot, version: str, split: str, split_file: str | None = None,
                     cache_dir: str | None = None, workers: int = 1, progress: bool = True, build: bool = True):
    """The GT cache of a split (a ``GTCache``). A missing cache is built and written first when
    ``build`` (the caller makes sure only one process builds)."""
    from ..gt import GTBuildOptions, build_gt, read_cache, write_cache

    path = gt_cache_path(dataroot, version, split, split_file, cache_dir)
    if not path.is_file():
        if not build:
            raise MapDataError(f"GT cache {path} does not exist")
        print(f"GT cache {path} not found: building it from {Path(dataroot) / version} ({split} split)", flush=True)
        samples = build_gt(GTBuildOptions(str(dataroot), version, split, split_file, workers=workers,
                                          progress=progress))
        write_cache(path, samples, {"dataroot": str(dataroot), "version": version, "split": split,
                                    "split_file": split_file})
    return read_cache(path)
