"""``lisa map synth``: write a small synthetic nuScenes tree (tables, map expansion, images, split file)."""

from __future__ import annotations

import argparse
import sys
import time

from lisa.map.synth.build import SynthOptions, write_synthetic_tree


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must look like 320x180, got {text!r}") from None
    if w < 16 or h < 9:
        raise argparse.ArgumentTypeError(f"image size {text} is too small")
    return w, h


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="lisa map synth",
        description="Write a synthetic nuScenes tree: a town map (expansion v1.3) with roads, lanes, dividers, "
                    "crossings, an island and a bus bay; scenes driving through it with LIDAR_TOP and six cameras "
                    "(images rendered from the map); OUT/split.json with train and val scenes.")
    p.add_argument("--out", required=True, help="folder to write the tree to")
    p.add_argument("--scenes", type=int, default=4)
    p.add_argument("--samples_per_scene", type=int, default=10, help="key frames per scene (2 Hz)")
    p.add_argument("--val_fraction", type=float, default=0.25)
    p.add_argument("--version", default="v1.0-mini", help="name of the table folder")
    p.add_argument("--image_size", type=_size, default=(320, 180), help="camera images, WIDTHxHEIGHT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_progress", action="store_true")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    start = time.perf_counter()
    options = SynthOptions(args.out, args.scenes, args.samples_per_scene, args.val_fraction, args.version,
                           image_size=args.image_size, seed=args.seed, progress=not args.no_progress)
    try:
        split = write_synthetic_tree(options)
    except ValueError as e:
        print(f"lisa map synth: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {args.scenes} scenes x {args.samples_per_scene} samples ({len(split['train'])} train, "
          f"{len(split['val'])} val scenes in split.json), {time.perf_counter() - start:.1f} s")
    return 0
