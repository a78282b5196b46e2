"""Map GT cache and Chamfer-AP evaluator throughput (samples per second), with extrapolations.

    python bench/map_gt.py                          # synthetic town, 400 samples, 1 and 2 workers
    python bench/map_gt.py --dense                  # the same town cut into smaller lanes with denser nodes
    python bench/map_gt.py --dataroot /data/nuscenes --version v1.0-mini --split train

The GT figure covers the per-sample work that `lisa map gt-cache` spreads over its workers (map query,
clipping, unions, rings, resampling); reading the tables happens once in the main process and is timed
separately. The trainval extrapolation (34,149 samples on 16 cores) assumes the parallel efficiency
measured with 2 workers. Real nuScenes patches hold more records than the synthetic town's (tens of
lane pieces and dividers); --dense cuts the town's lanes into 10 m pieces with a node every 2 m to get
closer. The evaluator runs on 1,000 samples of GT from the same tree with 50 predictions per sample
(each GT vector jittered by 0.3 m, the rest random lines), as MapTR's top-50 decoding gives.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from lisa.map import spec
from lisa.map.evaluation import evaluate, gt_vectors
from lisa.map.gt.build import GTBuildOptions, iter_gt, load_geometry, split_frames
from lisa.map.synth import SynthOptions, write_synthetic_tree

TRAINVAL_SAMPLES, VAL_SAMPLES, CORES = 34_149, 6_019, 16


def synthetic_tree(out: str, scenes: int, samples: int, dense: bool) -> None:
    from lisa.map.synth import town

    if dense:
        town.LANE_PIECE, town.NODE_STEP = 10.0, 2.0
    write_synthetic_tree(SynthOptions(out, scenes=scenes, samples_per_scene=samples, image_size=(32, 18),
                                      val_fraction=0.0, progress=False))


def gt_rate(frames, options: GTBuildOptions, runs: int) -> tuple[float, list]:
    for location in {f.location for f in frames}:
        load_geometry(options.dataroot, location)
    best, out = 0.0, []
    for _ in range(runs):
        start = time.perf_counter()
        out = list(iter_gt(frames, options))
        best = max(best, len(frames) / (time.perf_counter() - start))
    return best, out


def predictions_for(gts: dict, rng: np.random.Generator, per_sample: int = 50) -> dict:
    preds = {}
    for token, vectors in gts.items():
        p = [(cls, spec.resample(pts, spec.NUM_POINTS) + rng.normal(0, 0.3, (spec.NUM_POINTS, 2)), float(rng.random()))
             for cls, pts in vectors][:per_sample]
        while len(p) < per_sample:
            start = rng.uniform([-15, -30], [15, 30])
            line = start + np.cumsum(rng.normal(0, 1.5, (spec.NUM_POINTS, 2)), axis=0)
            p.append((spec.CLASSES[rng.integers(3)], line, float(rng.random() * 0.5)))
        preds[token] = p
    return preds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", default=None, help="an existing nuScenes tree (default: write the synthetic one)")
    p.add_argument("--version", default="v1.0-mini")
    p.add_argument("--split", default="train")
    p.add_argument("--split_file", default=None)
    p.add_argument("--scenes", type=int, default=16, help="synthetic tree: scenes")
    p.add_argument("--samples_per_scene", type=int, default=25, help="synthetic tree: samples per scene")
    p.add_argument("--dense", action="store_true", help="synthetic tree: smaller lane pieces, denser nodes")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--runs", type=int, default=2, help="best of this many runs")
    p.add_argument("--eval_samples", type=int, default=1000)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root, split_file = args.dataroot, args.split_file
        if root is None:
            root, split_file = tmp, f"{tmp}/split.json"
            start = time.perf_counter()
            synthetic_tree(tmp, args.scenes, args.samples_per_scene, args.dense)
            print(f"synthetic tree ({'dense' if args.dense else 'town'}): {args.scenes * args.samples_per_scene} "
                  f"samples written in {time.perf_counter() - start:.1f} s")
        options = GTBuildOptions(root, args.version, args.split, split_file, progress=False)
        start = time.perf_counter()
        frames = split_frames(options)
        print(f"tables + frames: {len(frames)} samples in {time.perf_counter() - start:.2f} s")
        rates, samples = {}, []
        for w in (int(v) for v in args.workers.split(",")):
            options.workers = w
            rates[w], samples = gt_rate(frames, options, args.runs)
            print(f"GT cache, {w} worker(s): {rates[w]:.0f} samples/s")
        n_inst = sum(len(s) for s in samples) / max(1, len(samples))
        print(f"  {n_inst:.1f} instances per sample")
        if 1 in rates:
            ideal = TRAINVAL_SAMPLES / (rates[1] * CORES) / 60
            print(f"  trainval ({TRAINVAL_SAMPLES:,} samples) on {CORES} cores: {ideal:.1f} min with linear scaling"
                  f" (+ reading the tables once)")
            if 2 in rates:
                eff = min(1.0, rates[2] / (2 * rates[1]))
                print(f"  at the 2-worker parallel efficiency measured here ({eff:.0%}): {ideal / eff:.1f} min "
                      f"(efficiency is only meaningful on an otherwise idle machine)")

        gts = gt_vectors(samples)
        tokens = list(gts)
        big = {f"{tokens[i % len(tokens)]}-{i}": gts[tokens[i % len(tokens)]] for i in range(args.eval_samples)}
        preds = predictions_for(big, np.random.default_rng(0))
        best = float("inf")
        for _ in range(args.runs):
            start = time.perf_counter()
            metrics = evaluate(big, preds)
            best = min(best, time.perf_counter() - start)
        print(f"evaluator: {args.eval_samples} samples ({sum(metrics['num_pred'].values()):,} predictions, "
              f"{sum(metrics['num_gt'].values()):,} GT) in {best:.2f} s = {args.eval_samples / best:.0f} samples/s "
              f"(mAP of the jittered predictions {metrics['mAP']:.3f})")
        print(f"  val ({VAL_SAMPLES:,} samples): {VAL_SAMPLES / args.eval_samples * best:.1f} s on one core")


if __name__ == "__main__":
    main()
