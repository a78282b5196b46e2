"""The demo's targets, measured: accuracy of the trained demo model, its learning curve, training
time and peak memory. Trains the default demo (as ``lisa demo --retrain``) with more validations
along the way.

    python bench/demo.py [--out /tmp/demo_bench] [--evals 10] [--steps N] [--threads 2] [--repeat]

Prints gIoU/cIoU (teacher-forced and generated, [SEG] rate) against the targets, the learning curve
(gIoU against training seconds) and writes it as a PNG (``--plot``, default OUT/learning_curve.png).
``--repeat`` trains a second time with the same seed and checks that the metrics are identical.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

TARGETS = {"teacher gIoU": 0.85, "teacher cIoU": 0.85, "generate gIoU": 0.80, "[SEG] rate": 0.95,
           "train minutes": 10.0, "peak GB": 4.0}


def peak_gb() -> float:
    """Peak resident memory of this process and its finished children (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024 ** 2


def plot(curve: list[dict], path: Path, title: str, start_seconds: float = 0.0) -> None:
    """gIoU/cIoU against training minutes; the first point is the model before ``lisa train``,
    after ``start_seconds`` of SAM encoder pretraining."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [start_seconds / 60] + [p["train_seconds"] / 60 for p in curve]
    for key, label in (("giou", "gIoU"), ("ciou", "cIoU")):
        ax.plot(xs, [curve[0].get("untrained_" + key, 0.0)] + [p[key] for p in curve], marker="o", label=label)
    ax.axhline(0.85, color="grey", linestyle="--", linewidth=1, label="target 0.85")
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("ReasonSeg|val (teacher-forced)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train_once(out: Path, args) -> dict:
    from lisa.demo.run import run_demo

    t0 = time.perf_counter()
    result = run_demo(out, retrain=True, steps=args.steps, seed=args.seed, progress=not args.quiet,
                      examples=False, evals=args.evals)
    info = json.loads((out / "model" / "demo.json").read_text())
    info["total_seconds"] = time.perf_counter() - t0
    info["result"] = result
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/lisa_demo_bench")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the demo recipe's)")
    ap.add_argument("--evals", type=int, default=10, help="validations during training (points of the curve)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--plot", default=None, help="PNG path (default OUT/learning_curve.png)")
    ap.add_argument("--repeat", action="store_true", help="train twice with the same seed; compare the metrics")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)

    from lisa.demo.run import evaluate_model

    info = train_once(out, args)
    untrained = evaluate_model(out / "base", out / "data", progress=False)["teacher"]
    curve = info["curve"]
    if curve:
        curve[0]["untrained_giou"], curve[0]["untrained_ciou"] = untrained["giou"], untrained["ciou"]
    teacher, gen = info["metrics"], info["generate_metrics"]
    train_min = info["train_seconds"] / 60
    print(f"\ndemo recipe: {json.dumps(info['recipe'])}")
    pre = info.get("sam_pretrain", {})
    print(f"threads {torch.get_num_threads()}; train {info['train_seconds']:.0f} s = SAM encoder pretraining "
          f"{pre.get('seconds', 0):.0f} s ({pre.get('steps', 0)} steps, kind accuracy "
          f"{pre.get('final_pixel_accuracy') or 0:.3f}) + lisa train's optimizer steps incl. data; "
          f"lisa train wall {info['wall_seconds']:.0f} s (incl. validations and saves), "
          f"whole demo {info['total_seconds']:.0f} s")
    print("\nlearning curve (ReasonSeg|val, 200 images, teacher-forced):")
    print(f"  {'step':>6} {'train s':>8} {'gIoU':>7} {'cIoU':>7}")
    print(f"  {0:>6} {pre.get('seconds', 0):>8.0f} {untrained['giou']:>7.4f} {untrained['ciou']:>7.4f}"
          "   (before lisa train)")
    for p in curve:
        print(f"  {p['step']:>6} {p['train_seconds']:>8.0f} {p['giou']:>7.4f} {p['ciou']:>7.4f}")
    measured = {"teacher gIoU": teacher["giou"], "teacher cIoU": teacher["ciou"], "generate gIoU": gen["giou"],
                "[SEG] rate": gen.get("seg_rate", 0.0), "train minutes": train_min, "peak GB": peak_gb()}
    print(f"\n{'figure':<15} {'measured':>9} {'target':>8}  met")
    for key, value in measured.items():
        target = TARGETS[key]
        met = value <= target if key in ("train minutes", "peak GB") else value >= target
        print(f"{key:<15} {value:>9.4f} {target:>8.2f}  {'yes' if met else 'NO'}")
    png = Path(args.plot) if args.plot else out / "learning_curve.png"
    plot(curve, png, f"lisa demo, {torch.get_num_threads()} CPU threads", pre.get("seconds", 0.0))
    print(f"\nlearning curve plot: {png}")
    if args.repeat:
        again = train_once(out.with_name(out.name + "_repeat"), args)
        same = again["metrics"] == teacher and again["generate_metrics"] == gen
        print(f"repeat with seed {args.seed}: metrics {'identical' if same else 'DIFFER'} "
              f"(gIoU {again['metrics']['giou']:.6f} vs {teacher['giou']:.6f})")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
