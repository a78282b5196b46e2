"""``lisa map predict``: one sample's map from a trained detector, drawn over its GT beside the front
camera (part 1's BEV drawing); optionally the prediction as MapTR's results JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lisa map predict", description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--checkpoint", required=True, help="a trained detector folder (e.g. RUN/best_model)")
    ap.add_argument("--dataroot", required=True, help="nuScenes folder")
    ap.add_argument("--version", default="v1.0-trainval", help="table folder under --dataroot")
    ap.add_argument("--sample", required=True, help="sample token")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--score_threshold", type=float, default=0.3, help="draw predictions at least this confident")
    ap.add_argument("--predictions_out", default=None, help="also write the prediction as MapTR results JSON")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from ..checkpoint.io import DetectorCheckpointError
    from ..checkpoint.sources import SourceError
    from ..errors import MapDataError
    from ..viz.overlay import prediction_picture
    from .predictor import as_eval_vectors, results_json
    from .sample import predict_sample

    try:
        gt, pred = predict_sample(args.checkpoint, args.dataroot, args.version, args.sample)
    except (MapDataError, DetectorCheckpointError, SourceError) as e:
        print(f"lisa map predict: {e}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    vectors = as_eval_vectors({args.sample: pred})[args.sample]
    prediction_picture(args.dataroot, gt, vectors, args.score_threshold).save(args.out)
    shown = int((pred.scores >= args.score_threshold).sum())
    print(f"{args.out}: {shown} predicted instances at score >= {args.score_threshold} over {len(gt)} GT instances")
    if args.predictions_out:
        Path(args.predictions_out).write_text(json.dumps(results_json({args.sample: pred})), encoding="utf-8")
        print(f"prediction -> {args.predictions_out}")
    return 0
