"""The GT cache file: a NumPy ``.npz`` archive (a zip of plain arrays plus one JSON header), never a pickle.

It is written in this format whatever the file name says (``gt_cache_train.pkl`` included) and read with
``allow_pickle=False``, so loading a cache cannot run code. Arrays (S samples, M instances, R raw points):

- ``header``: UTF-8 JSON as uint8: format name and version, classes, range, points per instance, the
  dataroot/version/split it came from, the camera channel order, and per sample its token, scene,
  location, LiDAR path and camera paths (relative to the dataroot).
- ``timestamps [S]``, ``lidar2ego [S,4,4]``, ``ego2global [S,4,4]``; ``cam_intrinsics [S,6,3,3]``,
  ``cam2lidar [S,6,4,4]``, ``cam_sizes [S,6,2]`` (width, height), ``cam_timestamps [S,6]``.
- ``inst_offsets [S+1]``: sample s owns instances ``inst_offsets[s]:inst_offsets[s+1]``; ``labels [M]``,
  ``points [M,20,2]``, ``closed [M]``, ``lengths [M]``, ``bboxes [M,4]``; ``raw_offsets [M+1]`` into
  ``raw_points [R,2]``. Floats are float32 except the poses (float64).

``write_maptr_json`` writes MapTR's evaluation-GT JSON instead (``{"GTs": [{"sample_token", "vectors":
[{"pts", "pts_num", "cls_name", "type"}]}]}``, raw points, metres, LiDAR frame).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lisa.map import spec
from lisa.map.errors import MapDataError
from lisa.map.gt.sample import CAMERAS, CameraInfo, SampleGT

FORMAT = "lisa-map-gt-cache"
FORMAT_VERSION = 1
_ARRAYS = ("header", "timestamps", "lidar2ego", "ego2global", "cam_intrinsics", "cam2lidar", "cam_sizes",
           "cam_timestamps", "inst_offsets", "labels", "points", "closed", "lengths", "bboxes", "raw_offsets",
           "raw_points")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def write_cache(path: str | Path, samples: Sequence[SampleGT], meta: dict | None = None) -> None:
    """Write ``samples`` to ``path`` in the cache format above (``meta``: dataroot, version, split, ...)."""
    counts = np.array([len(s) for s in samples], dtype=np.int64)
    raw = [r for s in samples for r in s.raw]
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "classes": list(spec.CLASSES), "range": list(spec.RANGE),
        "num_points": spec.NUM_POINTS, "cameras": list(CAMERAS), **(meta or {}),
        "samples": [{"token": s.token, "scene": s.scene, "location": s.location, "lidar_path": s.lidar_path,
                     "camera_paths": [c.path for c in s.cameras]} for s in samples],
    }
    s_len = len(samples)
    arrays = {
        "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
        "timestamps": np.array([s.timestamp for s in samples], dtype=np.int64),
        "lidar2ego": np.array([s.lidar2ego for s in samples], dtype=np.float64).reshape(s_len, 4, 4),
        "ego2global": np.array([s.ego2global for s in samples], dtype=np.float64).reshape(s_len, 4, 4),
        "cam_intrinsics": np.array([[c.intrinsic for c in s.cameras] for s in samples]).reshape(s_len, 6, 3, 3),
        "cam2lidar": np.array([[c.cam2lidar for c in s.cameras] for s in samples]).reshape(s_len, 6, 4, 4),
        "cam_sizes": np.array([[(c.width, c.height) for c in s.cameras] for s in samples],
                              np.int32).reshape(s_len, 6, 2),
        "cam_timestamps": np.array([[c.timestamp for c in s.cameras] for s in samples], np.int64).reshape(s_len, 6),
        "inst_offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "labels": np.concatenate([s.labels for s in samples] or [np.zeros(0)]).astype(np.int8),
        "points": np.concatenate([s.points for s in samples] or [np.zeros((0, spec.NUM_POINTS, 2))]).astype(np.float32),
        "closed": np.concatenate([s.closed for s in samples] or [np.zeros(0)]).astype(bool),
        "lengths": np.concatenate([s.lengths for s in samples] or [np.zeros(0)]).astype(np.float32),
        "bboxes": np.concatenate([s.bboxes for s in samples] or [np.zeros((0, 4))]).astype(np.float32),
        "raw_offsets": np.concatenate([[0], np.cumsum([len(r) for r in raw])]).astype(np.int64),
        "raw_points": np.concatenate(raw or [np.zeros((0, 2))]).astype(np.float32),
    }
    _atomic_write(Path(path), lambda f: np.savez(f, **arrays))


class GTCache:
    """A cache file read back: ``samples`` (list of :class:`SampleGT`, arrays are views), ``header``."""

    def __init__(self, samples: list[SampleGT], header: dict):
        self.samples = samples
        self.header = header
        self.by_token = {s.token: s for s in samples}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> SampleGT:
        return self.samples[i]


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def read_cache(path: str | Path) -> GTCache:
    """Read a cache written by :func:`write_cache` (pickles and MapTR GT JSON are refused with a clear error)."""
    path = Path(path)
    if not path.is_file():
        raise MapDataError(f"GT cache {path} does not exist")
    if not _is_zip(path):
        raise MapDataError(f"{path} is not a lisa GT cache (those are .npz archives written by `lisa map gt-cache`;"
                           f" pickled caches are not read, and a MapTR GT JSON holds no camera data)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _ARRAYS if k not in z.files]
            if missing:
                raise MapDataError(f"GT cache {path} lacks the arrays {', '.join(missing)}")
            a = {k: z[k] for k in _ARRAYS}
        header = json.loads(a["header"].tobytes().decode())
    except (ValueError, OSError, json.JSONDecodeError) as e:
        raise MapDataError(f"GT cache {path} cannot be read: {e}") from None
    if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
        raise MapDataError(f"GT cache {path} has format {header.get('format')!r} version "
                           f"{header.get('format_version')!r}; expected {FORMAT!r} version {FORMAT_VERSION}")
    if tuple(header["classes"]) != spec.CLASSES or header["num_points"] != spec.NUM_POINTS:
        raise MapDataError(f"GT cache {path} was built for classes {header['classes']} with {header['num_points']} "
                           f"points; this version uses {list(spec.CLASSES)} with {spec.NUM_POINTS}")
    channels, io, ro = header["cameras"], a["inst_offsets"], a["raw_offsets"]
    samples = []
    for s, info in enumerate(header["samples"]):
        cams = [CameraInfo(ch, p, int(a["cam_sizes"][s, k, 0]), int(a["cam_sizes"][s, k, 1]), a["cam_intrinsics"][s, k],
                           a["cam2lidar"][s, k], int(a["cam_timestamps"][s, k]))
                for k, (ch, p) in enumerate(zip(channels, info["camera_paths"]))]
        lo, hi = io[s], io[s + 1]
        samples.append(SampleGT(
            info["token"], info["scene"], info["location"], int(a["timestamps"][s]), info["lidar_path"],
            a["lidar2ego"][s], a["ego2global"][s], cams, labels=a["labels"][lo:hi].astype(np.int64),
            points=a["points"][lo:hi], closed=a["closed"][lo:hi], lengths=a["lengths"][lo:hi],
            bboxes=a["bboxes"][lo:hi], raw=[a["raw_points"][ro[i]:ro[i + 1]] for i in range(lo, hi)]))
    return GTCache(samples, header)


def maptr_gt_json(samples: Sequence[SampleGT]) -> dict:
    """MapTR's evaluation-GT document of ``samples`` (raw points)."""
    return {"GTs": [{"sample_token": s.token, "vectors": [
        {"pts": np.asarray(r, dtype=np.float64).tolist(), "pts_num": len(r), "cls_name": spec.CLASSES[int(lab)],
         "type": int(lab)} for lab, r in zip(s.labels, s.raw)]} for s in samples]}


def write_maptr_json(path: str | Path, samples: Sequence[SampleGT]) -> None:
    doc = maptr_gt_json(samples)
    _atomic_write(Path(path), lambda f: f.write(json.dumps(doc).encode()))
