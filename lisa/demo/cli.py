"""``lisa demo [--out DIR] [--retrain] [--steps N]``: train the tiny demo LISA on synthetic shapes
(first run, a few CPU minutes), evaluate it, export it to DIR/model and answer two queries."""

from __future__ import annotations

import argparse
import sys

from ..verbs import parse_and_set_up
from .recipe import STEPS_ENV


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lisa demo", description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--out", default="demo_out", help="output folder (default ./demo_out)")
    ap.add_argument("--retrain", action="store_true", help="train again even if DIR/model holds a trained demo")
    ap.add_argument("--steps", type=int, default=None,
                    help=f"training steps (default: the demo recipe's, or ${STEPS_ENV})")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data, the initialisation and training")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--workers", type=int, default=0, help="data loader worker processes while training")
    ap.add_argument("--evals", type=int, default=4, help="validations during training (the learning curve)")
    ap.add_argument("--no_examples", action="store_true", help="skip the two example queries")
    ap.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    return ap


def _print_result(result) -> None:
    m, g = result.metrics, result.generate_metrics
    state = "trained" if result.trained else "reused the trained model in"
    secs = f" ({result.train_seconds:.0f} s of training)" if result.train_seconds else ""
    print(f"\n{state} {result.model_dir}{secs}")
    if result.trained and result.curve:
        print("learning curve (ReasonSeg|val, teacher-forced): " + ", ".join(
            f"{p['train_seconds']:.0f} s: gIoU {p['giou']:.3f}" for p in result.curve))
    print(f"ReasonSeg|val, {m.get('num_images', '?')} images, teacher-forced: "
          f"gIoU {m['giou']:.4f}  cIoU {m['ciou']:.4f}")
    if g:
        print(f"ReasonSeg|val, generated answers: gIoU {g['giou']:.4f}  cIoU {g['ciou']:.4f}  "
              f"[SEG] in {100 * g.get('seg_rate', 0):.1f}% of answers")
    for i, ex in enumerate(result.examples):
        iou = f"  (IoU with the true shape {ex.iou:.3f})" if ex.iou is not None else ""
        print(f"\nexample {i + 1}: {ex.prompt}\n  answer: {ex.answer}{iou}\n  overlay: {ex.overlay}")
    print(f"\nchat with it: lisa chat --version {result.model_dir} --image IMAGE --prompt "
          "\"Segment the red circle.\"")


def main(argv=None) -> int:
    args = parse_and_set_up(build_parser(), argv)
    from ..data.problems import DataError
    from .run import run_demo

    try:
        result = run_demo(args.out, retrain=args.retrain, steps=args.steps, seed=args.seed,
                          progress=not args.quiet, examples=not args.no_examples, workers=args.workers,
                          evals=args.evals)
    except (ValueError, DataError, FileNotFoundError) as e:
        print(f"lisa demo: {e}", file=sys.stderr)
        return 2
    _print_result(result)
    return 0
