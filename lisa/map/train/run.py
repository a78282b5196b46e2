"""``run(options) -> run folder``: one ``lisa map train`` run, from options to checkpoints.

Launched by ``torchrun`` (or DeepSpeed's launcher) the process group comes from the environment;
a plain ``lisa map train`` is one process. The detector's random parts are drawn from ``--seed``
(the same on every process); afterwards each process seeds its own generators with
``seed * 1000 + rank`` (dropout differs between processes, as it should).
"""

from __future__ import annotations

import json
import logging
import random
import sys
from pathlib import Path

import numpy as np
import torch

from ... import dist
from ...precision import half_dtype
from ..checkpoint.build import build_from_config
from ..model.config import preset_config
from ..model.losses import LossWeights, SetCriterion
from ..model.report import trainable_share_line
from ..model.stages import apply_stage, parameter_groups
from .loop import MapTrainer, warmup_cosine
from .options import TrainOptions
from .state import atomic_write, default_run_dir, has_train_state, load_train_state, publish

log = logging.getLogger("lisa.map.train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(opts: TrainOptions):
    cfg = preset_config(opts.preset, llm_path=opts.llm_path, vision_path=opts.vision_path,
                        qformer_pretrained=opts.qformer_pretrained, image_size=opts.image_size)
    weights = LossWeights(cls=opts.cls_weight, pts=opts.pts_weight, dir=opts.dir_weight,
                          noobj_weight=opts.noobj_weight, aux=opts.aux_loss)
    dtype = half_dtype(opts.precision)
    if opts.init_from:
        from ..checkpoint.io import load_detector

        model = load_detector(opts.init_from, dtype=dtype)
        model.criterion = SetCriterion(model.config.num_classes, weights)
    else:
        model = build_from_config(cfg, dtype=dtype, loss_weights=weights, seed=opts.seed)
    apply_stage(model, opts.stage, opts.llm_lora_r)
    if opts.gradient_checkpointing:
        model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def write_config(run_dir: Path, opts: TrainOptions, model) -> None:
    import transformers

    data = {"options": opts.to_dict(), "detector": model.config.to_dict(), "world_size": dist.world_size(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    atomic_write(run_dir / "config.json", json.dumps(data, indent=2, default=str))


def _setup_logging() -> None:
    level = logging.INFO if dist.is_main() else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("lisa").setLevel(level)


def run(opts: TrainOptions | dict, *, train_set=None, collate_fn=None, validate=None, on_step=None) -> Path:
    """Train as ``lisa map train`` does and return the run folder.

    ``train_set`` / ``validate``: a data set of samples (see ``lisa.map.data.batch``) and a
    ``validate(model) -> {"mAP": ...}``; by default both come from ``--dataroot`` (GT caches built
    when missing). ``on_step(trainer)``: called after every optimizer step (tests, the demo)."""
    if isinstance(opts, dict):
        opts = TrainOptions(**opts)
    opts.check()
    dist.ensure_env()
    dist.init_torch_distributed()
    _setup_logging()
    run_dir = Path(opts.resume or opts.output_dir or default_run_dir(opts.stage))
    if opts.resume and not has_train_state(run_dir):
        raise ValueError(f"--resume {run_dir}: not a run folder with a complete training state")
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()

    model = build_model(opts)
    device = dist.device()
    model.to(device)
    if dist.is_main():
        print(trainable_share_line(model), flush=True)
    if train_set is None:
        from .data import build_train_and_val

        train_set, validate = build_train_and_val(opts, model)
    if collate_fn is None:
        from ..data.batch import collate as collate_fn
    seed_everything(opts.seed * 1000 + dist.rank())

    optimizer = torch.optim.AdamW(parameter_groups(model, opts.lr_qformer, opts.lr_queries, opts.lr_decoder,
                                                   opts.lr_llm, opts.weight_decay))
    scaler = torch.amp.GradScaler(device.type) if opts.fp16 else None
    engine = model
    if dist.world_size() > 1:
        from torch.nn.parallel import DistributedDataParallel

        engine = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    writer = None
    if dist.is_main():
        from ...train.logs import ScalarWriter

        writer = ScalarWriter(run_dir)
        if not opts.resume:
            write_config(run_dir, opts, model)
    trainer = MapTrainer(model, opts, run_dir, train_set, collate_fn, optimizer, None, scaler, writer,
                         None if opts.no_eval else validate, on_step, device, half_dtype(opts.precision), engine=engine)
    trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(opts.warmup_steps,
                                                                                   trainer.total_steps))
    if opts.resume:
        counters = load_train_state(run_dir, model, optimizer, trainer.scheduler, scaler, dist.rank(),
                                    dist.world_size())
        counters.pop("world_size", None)
        trainer.state.update(counters)
        if dist.is_main():
            print(f"resumed {run_dir} at step {trainer.state['global_step']}", flush=True)
    try:
        trainer.fit()
        if dist.is_main():
            publish(model, run_dir, "final_model", {"global_step": trainer.state["global_step"],
                                                    "train_seconds": trainer.state["train_seconds"]})
        dist.barrier()
    finally:
        if writer is not None:
            writer.close()
    return run_dir
