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

--checkpoint DIR (a trained map detector): predict the --split of --dataroot / --version first (its GT
cache is built when missing), write the predictions to --predictions (default DIR/results_SPLIT.json)
and evaluate them against that split's GT.
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
    p.add_argument("--gt", default=None, help="GT cache or MapTR GT JSON")
    p.add_argument("--predictions", default=None,
                   help="MapTR results JSON (read; with --checkpoint: written)")
    p.add_argument("--output", default=None, help="write the metrics JSON here")
    d = p.add_argument_group("predicting with a trained detector")
    d.add_argument("--checkpoint", default=None, help="map detector folder (e.g. RUN/best_model)")
    d.add_argument("--dataroot", default=None, help="nuScenes folder")
    d.add_argument("--version", default="v1.0-trainval")
    d.add_argument("--split", default="val")
    d.add_argument("--split_file", default=None, help='JSON {"train": [scenes], "val": [...]}')
    d.add_argument("--gt_cache_dir", default=None,
                   help="where GT caches are read or built (default DATAROOT/map_gt_cache)")
    d.add_argument("--batch_size", type=int, default=4)
    d.add_argument("--num_workers", type=int, default=0)
    d.add_argument("--max_samples", type=int, default=None, help="only the first N samples of the split")
    d.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    start = time.perf_counter()
    if args.checkpoint:
        return _eval_checkpoint(args, p, start)
    if not args.gt or not args.predictions:
        p.error("--gt and --predictions are required (or --checkpoint with --dataroot)")
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
    return _report(metrics, args, start)


def _eval_checkpoint(args, parser, start: float) -> int:
    from lisa.map.checkpoint import DetectorCheckpointError, SourceError
    from lisa.map.evaluation.detector import CheckpointEval, evaluate_checkpoint

    if not args.dataroot:
        parser.error("--checkpoint needs --dataroot (and --version, --split)")
    results = args.predictions or str(Path(args.checkpoint) / f"results_{args.split}.json")
    opts = CheckpointEval(args.checkpoint, args.dataroot, args.version, args.split, args.split_file,
                          args.gt_cache_dir, args.batch_size, args.num_workers, args.max_samples, args.precision)
    try:
        metrics = evaluate_checkpoint(opts, results)
    except (MapDataError, DetectorCheckpointError, SourceError) as e:
        print(f"lisa map eval: {e}", file=sys.stderr)
        return 2
    print(f"predictions -> {results}")
    return _report(metrics, args, start)


def _report(metrics: dict, args, start: float) -> int:
    print(format_table(metrics))
    print(f"({time.perf_counter() - start:.1f} s)")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(metrics, indent=2))
        print(f"metrics -> {args.output}")
    return 0
