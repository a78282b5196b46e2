"""``lisa map eval``: Chamfer-distance AP of map predictions against the GT."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lisa.map import spec
from lisa.map.errors import MapDataError
from lisa.map.evaluation.ap import evaluate
from lisa.map.evaluation.io import read_gt_vectors, read_predictions

DESCRIPTION = """\
Chamfer-distance AP (MapTR's protocol): lines resampled to 100 points, pairs scored where their 2 m
flat-capped buffers meet, greedy matching by confidence against each prediction's best GT, VOC area AP
at 0.5 / 1.0 / 1.5 m. mAP averages the classes that have GT (mAP_all_classes: all classes).

--gt: a lisa GT cache (`lisa map gt-cache`) or MapTR's GT JSON ({"GTs": [...]}).
--predictions: MapTR's results JSON ({"results": {sample_token: {"vectors": [{"pts", "cls_name",
"confidence_level"}]}}}; "map_results" is read too).
"""


def format_table(metrics: dict) -> str:
    thresholds = list(next(iter(metrics["ap"].values())))
    width = max(len(c) for c in spec.CLASSES) + 2
    head = "class".ljust(width) + "".join(f"AP@{t}".rjust(9) for t in thresholds) + "     AP   num_gt  num_pred"
    lines = [head, "-" * len(head)]
    for cls in spec.CLASSES:
        row = cls.ljust(width) + "".join(f"{metrics['ap'][cls][t]:9.4f}" for t in thresholds)
        lines.append(row + f"{metrics['class_ap'][cls]:7.4f}{metrics['num_gt'][cls]:9d}{metrics['num_pred'][cls]:10d}")
    lines.append(f"mAP {metrics['mAP']:.4f} (classes with GT)   mean over all classes {metrics['mAP_all_classes']:.4f}"
                 f"   samples {metrics['num_samples']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lisa map eval", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", required=True, help="GT cache or MapTR GT JSON")
    p.add_argument("--predictions", required=True, help="MapTR results JSON")
    p.add_argument("--output", default=None, help="write the metrics JSON here")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    start = time.perf_counter()
    try:
        gts = read_gt_vectors(args.gt)
        preds = read_predictions(args.predictions)
        metrics = evaluate(gts, preds)
    except MapDataError as e:
        print(f"lisa map eval: {e}", file=sys.stderr)
        return 2
    missing = sum(1 for t in gts if t not in preds)
    if missing:
        print(f"warning: {missing} of {len(gts)} GT samples have no predictions (counted as predicting nothing)",
              file=sys.stderr)
    print(format_table(metrics))
    print(f"({time.perf_counter() - start:.1f} s)")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(metrics, indent=2))
        print(f"metrics -> {args.output}")
    return 0
