"""Training and validation data of ``lisa map train`` from ``--dataroot``: the GT caches (built by the
main process when missing, the others wait), the image data sets and the per-epoch validator."""

from __future__ import annotations

from ... import dist
from .options import TrainOptions


def load_split(opts: TrainOptions, split: str):
    from ..inference.gt_cache import load_or_build_gt

    args = (opts.dataroot, opts.version, split, opts.split_file, opts.gt_cache_dir)
    if dist.is_main():
        cache = load_or_build_gt(*args, workers=max(1, opts.num_workers), progress=opts.progress)
    dist.barrier()
    if not dist.is_main():
        cache = load_or_build_gt(*args, build=False)
    return cache


def build_train_and_val(opts: TrainOptions, model):
    from ..data.nuscenes import NuScenesMapDataset
    from ..evaluation.detector import Validator

    cfg = model.config
    train = NuScenesMapDataset(opts.dataroot, load_split(opts, opts.train_split).samples, cfg.image_size,
                               cfg.cameras)
    validate = None
    if not opts.no_eval:
        samples = load_split(opts, opts.val_split).samples
        if opts.max_val_samples:
            samples = samples[: opts.max_val_samples]
        val = NuScenesMapDataset(opts.dataroot, samples, cfg.image_size, cfg.cameras)
        validate = Validator(val, samples, batch_size=opts.batch_size, num_workers=opts.num_workers,
                             progress=opts.progress)
    return train, validate
