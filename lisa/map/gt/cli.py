"""``lisa map gt-cache``: build the map ground truth of a nuScenes split."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lisa.map.errors import MapDataError
from lisa.map.gt.build import GTBuildOptions, build_gt
from lisa.map.gt.cache import write_cache, write_maptr_json

DESCRIPTION = """\
Build the vectorized map ground truth (divider, ped_crossing, boundary; MapTR's protocol) of every
sample of a nuScenes split, in each sample's LIDAR_TOP frame.

What --output holds:
  *.json      MapTR's evaluation-GT JSON: {"GTs": [{"sample_token", "vectors": [{"pts", "pts_num",
              "cls_name", "type"}]}]} with the raw (unresampled) points, metres, LiDAR frame.
  any other   the lisa GT cache: a NumPy .npz archive (never a pickle, whatever the extension) with,
              per sample, the LiDAR/ego poses, the six cameras' image paths, sizes, intrinsics and
              cam2lidar transforms, and per map instance its class, 20 resampled points, raw points,
              closed flag, length and box. Read it with lisa.map.gt.read_cache.
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lisa map gt-cache", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True, help="nuScenes root: maps/, samples/, sweeps/, v1.0-*/")
    p.add_argument("--version", default="v1.0-mini", help="table folder: v1.0-mini or v1.0-trainval")
    p.add_argument("--split", default="train",
                   help="train / val (official: mini_train / mini_val on v1.0-mini), or a key of --split_file")
    p.add_argument("--split_file", default=None,
                   help='JSON {"train": [scene names], "val": [...]} for custom or partial trees')
    p.add_argument("--output", required=True, help="cache file (.json: MapTR GT JSON instead; see above)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--skip_missing", action="store_true", help="leave out samples whose files are missing")
    p.add_argument("--no_progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    options = GTBuildOptions(args.dataroot, args.version, args.split, args.split_file, args.workers,
                             args.skip_missing, not args.no_progress)
    start = time.perf_counter()
    try:
        samples = build_gt(options, warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    except MapDataError as e:
        print(f"lisa map gt-cache: {e}", file=sys.stderr)
        return 2
    output = Path(args.output)
    if output.suffix.lower() == ".json":
        write_maptr_json(output, samples)
    else:
        write_cache(output, samples, {"dataroot": str(Path(args.dataroot).resolve()), "version": args.version,
                                      "split": args.split})
    n = sum(len(s) for s in samples)
    print(f"{len(samples)} samples, {n} instances -> {output} ({time.perf_counter() - start:.1f} s)")
    return 0
