"""A trained detector over a whole split: predictions (MapTR results JSON) and part 1's Chamfer AP.

What ``lisa map eval --checkpoint DIR`` runs: the split's GT cache (built when missing), the detector's
predictions for every sample, the results file, the metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .predictor import evaluate_predictions, predict, results_json


@dataclass
class CheckpointEval:
    checkpoint: str
    dataroot: str
    version: str = "v1.0-trainval"
    split: str = "val"
    split_file: str | None = None
    gt_cache_dir: str | None = None
    batch_size: int = 4
    num_workers: int = 0
    max_samples: int | None = None
    precision: str = "fp32"
    progress: bool = True


def evaluate_checkpoint(opts: CheckpointEval, results_path: str | Path | None = None) -> dict:
    """Returns the metrics; writes MapTR's results JSON to ``results_path`` when given."""
    from ..data.nuscenes import NuScenesMapDataset, load_or_build_gt
    from ..model.io import load_detector

    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[opts.precision]
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model = load_detector(opts.checkpoint, dtype=dtype, device=device)
    cache = load_or_build_gt(opts.dataroot, opts.version, opts.split, opts.split_file, opts.gt_cache_dir,
                             workers=max(1, opts.num_workers), progress=opts.progress)
    samples = cache.samples[: opts.max_samples] if opts.max_samples else cache.samples
    data = NuScenesMapDataset(opts.dataroot, samples, model.config.image_size, model.config.cameras)
    preds = predict(model, data, opts.batch_size, opts.num_workers, opts.progress, autocast_dtype=dtype)
    if results_path is not None:
        path = Path(results_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"checkpoint": str(opts.checkpoint), "version": opts.version, "split": opts.split}
        path.write_text(json.dumps(results_json(preds, meta)), encoding="utf-8")
    return evaluate_predictions(preds, samples)
