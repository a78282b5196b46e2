"""``lisa map demo [--out DIR] [--retrain] [--steps N]``: train the tiny map detector on the synthetic
town (first run: a few CPU minutes), then report its held-out Chamfer mAP against the untrained
detector and the average-map baseline; reruns reuse the trained model."""

from __future__ import annotations

import argparse
import sys

from ...verbs import parse_and_set_up


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lisa map demo", description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--out", default="map_demo_out", help="output folder (default ./map_demo_out)")
    ap.add_argument("--retrain", action="store_true", help="train again even if DIR/model holds the trained demo")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the town, the initialisation and training")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    return ap


def format_result(r) -> str:
    from ..spec import CLASSES
    from .run import TARGET

    m = r.metrics
    lines = []
    state = "trained" if r.trained else "reused the trained model in"
    secs = f" ({r.train_seconds:.0f} s of training)" if r.train_seconds else ""
    lines.append(f"\n{state} {r.model_dir}{secs}")
    if r.curve:
        lines.append("learning curve (held-out mAP): " + ", ".join(
            f"{c['train_seconds']:.0f} s: {c['mAP']:.3f}" for c in r.curve))
    lines.append("")
    lines.append(f"{'class':<14}{'AP@0.5':>8}{'AP@1.0':>8}{'AP@1.5':>8}{'AP':>8}{'GT':>6}")
    for c in CLASSES:
        ap = m["ap"][c]
        lines.append(f"{c:<14}{ap['0.5']:8.3f}{ap['1.0']:8.3f}{ap['1.5']:8.3f}{m['class_ap'][c]:8.3f}"
                     f"{m['num_gt'][c]:6d}")
    lines.append("")
    lines.append(f"untrained detector: mAP {r.untrained['mAP']:.4f}")
    lines.append(f"average-map baseline (the training set's typical map, no images): mAP {r.baseline['mAP']:.4f}")
    verdict = "reached" if m["mAP"] >= TARGET else "NOT reached"
    lines.append(f"held-out mAP: {m['mAP']:.4f}  (target {TARGET:.2f} {verdict})")
    if r.curve_png:
        lines.append(f"learning curve: {r.curve_png}")
    if r.example_png:
        lines.append(f"a held-out sample: {r.example_png}  (lisa map predict --checkpoint {r.model_dir} "
                     f"--dataroot {r.model_dir.parent / 'data'} --version v1.0-mini --sample {r.example_token} "
                     f"--out bev.png)")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_and_set_up(build_parser(), argv)
    from ..errors import MapDataError
    from .run import run_map_demo

    try:
        result = run_map_demo(args.out, retrain=args.retrain, steps=args.steps, seed=args.seed,
                              progress=not args.quiet)
    except (ValueError, MapDataError, FileNotFoundError) as e:
        print(f"lisa map demo: {e}", file=sys.stderr)
        return 2
    print(format_result(result))
    return 0
