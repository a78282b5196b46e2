"""Building the GT of a split: tables -> per-sample frames -> map vectors (in worker processes) -> cache.

The tables are read once in the main process; workers only need the map geometry of the locations in
the split (inherited from the parent where processes fork, loaded once per worker otherwise). The result
is the same, in the same order, for any number of workers: nothing here draws random numbers.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lisa.map.errors import MapDataError
from lisa.map.gt.geometry import MapGeometry, extract_vectors
from lisa.map.gt.sample import SampleFrame, SampleGT, check_files, make_sample_gt, sample_frame
from lisa.map.nuscenes.expansion import MapExpansion, expansion_path
from lisa.map.nuscenes.splits import split_scenes
from lisa.map.nuscenes.tables import NuScenesTree


@dataclass
class GTBuildOptions:
    dataroot: str
    version: str = "v1.0-mini"
    split: str = "train"
    split_file: str | None = None
    workers: int = 1
    skip_missing: bool = False  # skip samples whose files are missing instead of failing
    progress: bool = True
    chunksize: int = 8


_GEOMETRY: dict[tuple, MapGeometry] = {}  # per process: (expansion file, mtime, size) -> geometry
_DATAROOT: list[str] = []


def load_geometry(dataroot: str | Path, location: str) -> MapGeometry:
    """The GT geometry of ``location``, cached in this process (until its file changes)."""
    path = expansion_path(dataroot, location)
    stat = path.stat() if path.is_file() else None
    key = (str(path.resolve()), stat and stat.st_mtime_ns, stat and stat.st_size)
    if stat is None or key not in _GEOMETRY:
        _GEOMETRY[key] = MapGeometry(MapExpansion.load(dataroot, location))
    return _GEOMETRY[key]


def sample_gt(frame: SampleFrame, dataroot: str | Path) -> SampleGT:
    """The GT of one sample (map vectors in its LiDAR frame)."""
    return make_sample_gt(frame, extract_vectors(load_geometry(dataroot, frame.location), frame.lidar2global))


def _init_worker(dataroot: str) -> None:
    _DATAROOT[:] = [dataroot]


def _work(frame: SampleFrame) -> SampleGT:
    return sample_gt(frame, _DATAROOT[0])


def split_frames(options: GTBuildOptions, warn: Callable[[str], None] | None = None) -> list[SampleFrame]:
    """Frames of every sample of the split, in scene order then time; files checked."""
    tree = NuScenesTree(options.dataroot, options.version)
    names = split_scenes(options.version, options.split, options.split_file)
    if options.split_file is None:
        absent = [n for n in names if n not in tree.scene_by_name]
        if absent:
            hint = Path(options.dataroot) / "split.json"
            raise MapDataError(
                f"{len(absent)} scene(s) of the official {options.version} {options.split!r} split are not in "
                f"{tree.dataroot / options.version} (first: {absent[0]}); a custom or partial tree needs "
                f"--split_file" + (f" (this tree has {hint})" if hint.is_file() else ""))
    frames = [sample_frame(tree, sample, scene) for scene in tree.scenes(names) for sample in tree.scene_samples(scene)]
    kept = []
    for frame in frames:
        missing = check_files(frame, options.dataroot)
        if not missing:
            kept.append(frame)
        elif not options.skip_missing:
            raise MapDataError(f"sample {frame.token} (scene {frame.scene}): {len(missing)} file(s) missing, "
                               f"first {missing[0]} (pass --skip_missing to leave such samples out)")
    if len(kept) < len(frames) and warn:
        warn(f"skipped {len(frames) - len(kept)} of {len(frames)} samples whose files are missing")
    return kept


def iter_gt(frames: list[SampleFrame], options: GTBuildOptions) -> Iterator[SampleGT]:
    """The GT of ``frames`` in order, computed by ``options.workers`` processes."""
    for location in sorted({f.location for f in frames}):  # fail early, and let forked workers inherit it
        load_geometry(options.dataroot, location)
    if options.workers <= 1 or len(frames) <= 1:
        for frame in frames:
            yield sample_gt(frame, options.dataroot)
        return
    method = "fork" if "fork" in mp.get_all_start_methods() and sys.platform != "darwin" else "spawn"
    with mp.get_context(method).Pool(options.workers, _init_worker, (str(options.dataroot),)) as pool:
        yield from pool.imap(_work, frames, chunksize=max(1, options.chunksize))


def build_gt(options: GTBuildOptions, warn: Callable[[str], None] | None = None) -> list[SampleGT]:
    """Every sample of the split with its map GT (progress bar on stderr when ``options.progress``)."""
    from tqdm import tqdm

    frames = split_frames(options, warn)
    if not frames:
        raise MapDataError(f"the {options.split!r} split of {Path(options.dataroot) / options.version} has no samples")
    it = iter_gt(frames, options)
    return list(tqdm(it, total=len(frames), desc="map GT", unit="sample", disable=not options.progress))
