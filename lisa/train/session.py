"""``run(args) -> run_dir``: one training (or ``--eval_only``) run, from flags to checkpoints."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch

from .. import dist
from ..checkpoint import run_folder
from ..checkpoint.run_folder import atomic_write
from ..model.allocator import reuse_freed_memory
from ..precision import to_dtype
from . import resume
from .args import options
from .options import TrainOptions

log = logging.getLogger("lisa.train")



def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _setup_logging() -> None:
    level = logging.INFO if dist.is_main() else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("lisa").setLevel(level)
    try:
        from deepspeed.utils import logger as ds_logger
        ds_logger.setLevel(logging.WARNING)
    except ImportError:
        pass


def write_run_files(run_dir: Path, args, model, tokenizer, lora, ds_config) -> None:
    import deepspeed
    import transformers

    resolved = json.loads(args.to_json())
    resolved["deepspeed_config"] = ds_config
    resolved["world_size"] = dist.world_size()
    resolved["versions"] = {"torch": torch.__version__, "deepspeed": deepspeed.__version__,
                            "transformers": transformers.__version__}
    atomic_write(run_dir / run_folder.RUN_CONFIG_FILE, json.dumps(resolved, indent=2, default=str))
    info = {"format": "lisa-run", "format_version": 1, "lisa_config": model.config.to_dict(),
            "seg_token_id": model.seg_token_id, "base": args.version, "precision": args.precision,
            "bits": getattr(args, "bits", 16),
            "lora": {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout, "targets": lora.targets,
                     "modules": lora.modules}}
    atomic_write(run_dir / run_folder.RUN_MODEL_FILE, json.dumps(info, indent=2, default=str))
    tokenizer.save_pretrained(str(run_dir / run_folder.TOKENIZER_DIR))


def _validate_fn(args, model, tokenizer, val_sets, run_dir):
    from ..evaluation import evaluate, format_table
    from ..evaluation.run import write_metrics

    def validate(epoch: int) -> dict | None:
        results = [evaluate(model, tokenizer, ds, args.protocol, all_queries=args.all_queries,
                            conv_type=args.conv_type, max_new_tokens=args.max_new_tokens, name=name)
                   for name, ds in val_sets]
        if dist.is_main():
            print(format_table(results), flush=True)
            write_metrics(run_dir, results)
        first = results[0]
        log.info("epoch %d: giou: %.4f, ciou: %.4f", epoch, first["giou"], first["ciou"])
        return first

    return validate


def eval_only(args, run_dir: Path) -> Path:
    from ..evaluation.run import load_model_for_eval, run_eval

    if not args.resume and args.auto_resume and run_folder.locate(run_dir / run_folder.CKPT_DIR) is not None:
        args.resume = str(run_dir)  # as the original: --eval_only evaluates the run's checkpoint if any
        log.info("--eval_only: evaluating the checkpoint of %s (auto_resume)", run_dir)
    model, tokenizer = load_model_for_eval(args)
    run_eval(args, model, tokenizer, run_dir)
    return run_dir


def run(args: TrainOptions | dict, *, on_step=None) -> Path:
    """Train (or evaluate with ``eval_only``) as ``lisa train`` does; returns the run folder.

    ``args``: the options (``lisa.train.args.parse_args`` / ``options``), or a dict of flag names to
    values (defaults for the rest).
    ``on_step``: optional callable(trainer) after every optimizer step (tests, demos).
    """
    if isinstance(args, dict):
        args = options(**args)
    run_dir = Path(args.log_base_dir) / args.exp_name
    dist.init_deepspeed_distributed(args.local_rank)
    _setup_logging()
    reuse_freed_memory()  # large temporaries reuse freed heap blocks (same results, less time)
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    if args.eval_only:
        return eval_only(args, run_dir)

    from .data import build_dataset, make_collate
    from .engine import create_engine
    from .logs import ScalarWriter
    from .loop import Trainer
    from .model_setup import build_model, count_parameters

    model, tokenizer, lora = build_model(args)
    total, trainable = count_parameters(model)
    log.info("parameters: %.2fM total, %.2fM trainable; LoRA on %d modules", total / 1e6, trainable / 1e6,
             len(lora.modules))
    val_sets = []
    if not args.no_eval:
        if model.config.has_seg_head:
            from ..evaluation.run import build_val_sets

            val_sets = build_val_sets(args, model.config)
        else:
            log.info("plain LLaVA model: no gIoU validation (--no_eval implied)")
    dataset = build_dataset(args, model.config, dist.rank(), dist.world_size())
    if not args.steps_per_epoch:
        args.steps_per_epoch = dataset.steps_per_epoch  # --epoch_over_data: one pass over the records
        log.info("one pass over %d records: %d steps per epoch", len(dataset.records), args.steps_per_epoch)
    collate_fn = make_collate(args, tokenizer, model.config)
    engine, ds_config = create_engine(model, args)
    # dropout and other draws differ between ranks (a resume restores the saved states instead)
    seed_everything(args.seed * 1000 + dist.rank())
    if dist.is_main():
        write_run_files(run_dir, args, model, tokenizer, lora, ds_config)

    ckpt_dir = run_dir / run_folder.CKPT_DIR
    state = {"global_step": 0, "epoch": 0, "step_in_epoch": 0, "best_giou": -1.0, "best_ciou": -1.0,
             "best_tag": None, "bad_steps": 0, "samples_seen": 0, "train_seconds": 0.0}
    where = None
    if args.resume:
        where = run_folder.locate(args.resume, args.tag)
        if where is None:
            raise ValueError(f"--resume {args.resume}: no complete DeepSpeed checkpoint there")
    elif args.auto_resume:
        if dist.is_main():
            removed = run_folder.remove_incomplete(ckpt_dir)
            if removed:
                log.warning("removed incomplete checkpoint folders %s", removed)
        dist.barrier()
        where = run_folder.locate(ckpt_dir)
    if where is not None:
        state.update(resume.load(engine, *where))
        log.info("resumed from %s at step %d", where[0] / where[1], state["global_step"])
        if dist.is_main():  # the steps after the checkpoint are run, and logged, again
            for name in (run_folder.TRAIN_LOG, run_folder.VAL_LOG):
                run_folder.drop_steps_after(run_dir / name, state["global_step"])

    purge = state["global_step"] + 1 if where is not None else None
    writer = ScalarWriter(run_dir, args.wandb, args.to_dict(), args.exp_name, purge) if dist.is_main() else None
    trainer = Trainer(engine, args, run_dir, dataset, collate_fn, to_dtype(args.precision), state, writer,
                      _validate_fn(args, engine.module, tokenizer, val_sets, run_dir) if val_sets else None,
                      on_step)
    spe = args.steps_per_epoch
    start_epoch, start_step = divmod(state["global_step"], spe)
    try:
        for epoch in range(start_epoch, args.epochs):
            if not trainer.train_epoch(epoch, start_step if epoch == start_epoch else 0):
                break
            trainer.end_of_epoch(epoch)
            if args.max_steps and state["global_step"] >= args.max_steps:
                break
    finally:
        if writer is not None:
            writer.close()
    return run_dir
