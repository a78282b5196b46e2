"""A trained map detector judged by part 1's Chamfer AP: the per-epoch validator of ``lisa map train``
and ``lisa map eval --checkpoint`` (the split's GT cache, built when missing, the detector's
predictions for every sample, MapTR's results file, the metrics)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ...precision import half_dtype
from ..inference.predictor import as_eval_vectors, predict, results_json
from ..model.decode import MapPrediction


def evaluate_predictions(predictions: dict[str, MapPrediction], samples) -> dict:
    """Chamfer AP (part 1's evaluator) of ``predictions`` against the raw GT of ``samples`` (GT cache)."""
    from . import evaluate, gt_vectors

    return evaluate(gt_vectors(samples), as_eval_vectors(predictions))


class Validator:
    """``validator(model) -> metrics``: predict the val samples and score them (used after each epoch)."""

    def __init__(self, dataset, samples, batch_size: int = 4, num_workers: int = 0, progress: bool = True,
                 autocast_dtype: torch.dtype | None = None):
        self.dataset, self.samples = dataset, samples
        self.batch_size, self.num_workers, self.progress = batch_size, num_workers, progress
        self.autocast_dtype = autocast_dtype

    def __call__(self, model) -> dict:
        preds = predict(model, self.dataset, self.batch_size, self.num_workers, self.progress, self.autocast_dtype)
        return evaluate_predictions(preds, self.samples)


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
    from ..checkpoint.io import load_detector
    from ..data.nuscenes import NuScenesMapDataset
    from ..inference.gt_cache import load_or_build_gt

    dtype = half_dtype(opts.precision)
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
