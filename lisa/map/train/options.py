"""``lisa map train`` options: one typed dataclass, and the command-line flags that fill it.

Names and defaults are those of the LLaVA map fork users train with today (``--batch_size 4
--epochs 24 --lr_qformer 1e-5 --lr_queries 1e-4 --lr_decoder 1e-4 --warmup_steps 1000
--grad_clip 0.05``); what this project adds has its own help text.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from ...options import CommandOptions
from ..model.config import PRESETS


@dataclass
class TrainOptions(CommandOptions):
    # data
    dataroot: str = "./data/nuscenes"
    version: str = "v1.0-trainval"
    split_file: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    gt_cache_dir: str | None = None  # default: DATAROOT/map_gt_cache
    num_workers: int = 4
    max_val_samples: int | None = None
    # model
    preset: str = "7b"
    llm_path: str | None = None
    vision_path: str | None = None
    qformer_pretrained: str | None = None
    image_size: int | None = None
    init_from: str | None = None  # a detector folder to start from (stage 3 after stage 2)
    # stage
    stage: int = 2
    llm_lora_r: int = 0
    # optimisation
    batch_size: int = 4
    grad_accumulation_steps: int = 1
    epochs: int = 24
    max_steps: int | None = None
    lr_qformer: float = 1e-5
    lr_queries: float = 1e-4
    lr_decoder: float = 1e-4
    lr_llm: float = 1e-6
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    grad_clip: float = 0.05
    fp16: bool = False
    bf16: bool = False
    gradient_checkpointing: bool = False
    # losses
    cls_weight: float = 2.0
    pts_weight: float = 5.0
    dir_weight: float = 0.005
    noobj_weight: float = 0.1
    aux_loss: bool = True
    # run
    output_dir: str | None = None
    seed: int = 42
    log_steps: int = 10
    save_steps: int = 0
    eval_epochs: int = 1
    resume: str | None = None
    no_eval: bool = False
    progress: bool = True

    def check(self) -> None:
        if self.fp16 and self.bf16:
            raise ValueError("--fp16 and --bf16 exclude each other")
        if self.stage not in (2, 3):
            raise ValueError(f"--stage must be 2 or 3, got {self.stage}")
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        for name in ("batch_size", "grad_accumulation_steps", "epochs", "eval_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--max_steps must be at least 1, got {self.max_steps}")
        if self.grad_clip < 0 or self.warmup_steps < 0:
            raise ValueError("--grad_clip and --warmup_steps must not be negative")

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "bf16" if self.bf16 else "fp32"


HELP = {
    "dataroot": "nuScenes folder (maps/, samples/, v1.0-*/)",
    "version": "v1.0-mini or v1.0-trainval (a folder under --dataroot)",
    "split_file": "JSON {\"train\": [scene names], \"val\": [...]} instead of the official splits",
    "gt_cache_dir": "where the GT caches are read or built (default DATAROOT/map_gt_cache)",
    "num_workers": "data loader worker processes per training process",
    "max_val_samples": "validate on the first N val samples only",
    "preset": "detector size: 7b (CLIP-L, BLIP-2 Q-Former, Vicuna-7B) or tiny (tests, demo)",
    "llm_path": "causal LM folder (LLaMA / Vicuna / LLaVA / LISA); default: the preset's",
    "vision_path": "CLIP folder; default: the preset's",
    "qformer_pretrained": "'blip2' (Salesforce/blip2-opt-2.7b in the local cache), a BLIP-2 folder, or 'none'",
    "image_size": "camera images are resized to this square size (default: the preset's CLIP size)",
    "init_from": "start from a trained detector folder (e.g. stage 3 from stage 2's best_model)",
    "stage": "2: Q-Former + queries + decoder, LLM frozen; 3: the LLM trains too",
    "llm_lora_r": "stage 3 through LoRA adapters of this rank (0: the whole LLM)",
    "batch_size": "samples per process and micro-step",
    "max_steps": "stop after this many optimizer steps (the LR schedule ends there too)",
    "lr_llm": "stage 3: the LLM's learning rate",
    "grad_clip": "max gradient norm (0: no clipping)",
    "fp16": "frozen parts in float16, autocast, loss scaling",
    "bf16": "frozen parts in bfloat16, autocast",
    "gradient_checkpointing": "recompute the LLM's activations in backward (less memory)",
    "noobj_weight": "weight of the no-object class in the classification loss",
    "aux_loss": "supervise every decoder layer",
    "output_dir": "run folder (default outputs/map_detection_stage{2,3}_YYYYMMDD_HHMMSS)",
    "log_steps": "a log line (and TensorBoard scalars) every N optimizer steps",
    "save_steps": "also save a resumable training state every N optimizer steps (0: per epoch only)",
    "eval_epochs": "validate and write epoch_N every N epochs (and after the last one)",
    "resume": "continue an interrupted run (its folder); exact: same batches, LRs and random draws",
    "no_eval": "no validation (best_model then follows the training loss)",
    "progress": "progress bar",
}


def build_parser(prog: str = "lisa map train") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="Train the LLaVA map detector on nuScenes map ground truth.")
    for f in fields(TrainOptions):
        flag = f"--{f.name}"
        default = f.default
        if isinstance(default, bool):
            if default:
                ap.add_argument(f"--no_{f.name}", dest=f.name, action="store_false", help=f"turn off: {HELP[f.name]}")
            else:
                ap.add_argument(flag, action="store_true", help=HELP.get(f.name))
            continue
        kind = {"int | None": int, "float | None": float, "str | None": str}.get(str(f.type), None)
        if kind is None:
            kind = type(default) if default is not None else str
        help_text = HELP.get(f.name, "")
        ap.add_argument(flag, type=kind, default=default,
                        help=f"{help_text} (default {default})" if help_text else f"default {default}")
    ap.set_defaults(progress=True)
    return ap


def parse_options(argv=None) -> TrainOptions:
    ns = build_parser().parse_args(argv)
    opts = TrainOptions.from_namespace(ns)
    opts.check()
    return opts
