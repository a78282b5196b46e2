"""The DeepSpeed config (the original's, built in code) and engine creation.

The optimizer is ``torch.optim.AdamW`` handed to DeepSpeed as a client optimizer, so none of
DeepSpeed's compiled optimizers is needed; the schedule is DeepSpeed's own ``WarmupDecayLR``
(linear warm-up from 0 to ``--lr`` over ``--warmup_steps`` optimizer steps, then linear decay to 0
at ``epochs * steps_per_epoch``), taken from the config as the original did. ``--lr_scheduler
cosine`` is the schedule of LLaVA's training instead (transformers' cosine schedule with warm-up:
linear from 0 over the warm-up steps, then a half cosine to 0 at the last step), given to DeepSpeed
as a client scheduler; ``--warmup_ratio`` sets the warm-up as ``ceil(ratio * total steps)``.
"""

from __future__ import annotations

import copy
import json
import logging
import math

import torch

log = logging.getLogger("lisa.train")


def total_steps(args) -> int:
    return max(1, args.epochs * args.steps_per_epoch)


def warmup_steps(args) -> int:
    ratio = getattr(args, "warmup_ratio", None)
    return math.ceil(total_steps(args) * ratio) if ratio is not None else int(args.warmup_steps)


def default_config(args) -> dict:
    """The DeepSpeed config the original ``train_ds.py`` builds in code (ZeRO-2, AdamW, WarmupDecayLR,
    fp16/bf16 from ``--precision``, gradient clipping 1.0), with the schedule's warm-up length a flag
    (default 100 as the original); no "scheduler" entry for ``--lr_scheduler cosine`` (a client
    scheduler, see :func:`create_engine`)."""
    total = total_steps(args)
    config = {
        "train_micro_batch_size_per_gpu": args.batch_size,
        "gradient_accumulation_steps": args.grad_accumulation_steps,
        "optimizer": {"type": "AdamW", "params": {"lr": args.lr, "weight_decay": args.weight_decay,
                                                  "betas": [args.beta1, args.beta2]}},
        "scheduler": {"type": "WarmupDecayLR", "params": {
            "total_num_steps": total, "warmup_min_lr": 0, "warmup_max_lr": args.lr,
            "warmup_num_steps": max(2, min(warmup_steps(args), total)), "warmup_type": "linear"}},
        "fp16": {"enabled": args.precision == "fp16"},
        "bf16": {"enabled": args.precision == "bf16"},
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": 2, "contiguous_gradients": True, "overlap_comm": True,
                              "reduce_scatter": True, "reduce_bucket_size": 5e8,
                              "allgather_bucket_size": 5e8},
    }
    if getattr(args, "lr_scheduler", "warmup_decay") == "cosine":
        del config["scheduler"]
    return config


def load_config(args) -> dict:
    """The built-in config, or ``--deepspeed_config`` with batch sizes / precision / schedule
    filled in from the flags where the file leaves them out or says ``"auto"``."""
    base = default_config(args)
    if not args.deepspeed_config:
        return base
    try:
        with open(args.deepspeed_config, encoding="utf-8") as f:
            user = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"--deepspeed_config {args.deepspeed_config}: malformed JSON ({e})") from e
    if not isinstance(user, dict):
        raise ValueError(f"--deepspeed_config {args.deepspeed_config}: expected a JSON object")
    cfg = copy.deepcopy(user)
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping",
                "optimizer", "scheduler", "fp16", "bf16"):
        if cfg.get(key, "auto") == "auto":
            if key in base:
                cfg[key] = base[key]
            else:
                cfg.pop(key, None)
    cfg.pop("train_batch_size", None) if cfg.get("train_batch_size") == "auto" else None
    stage = int(cfg.get("zero_optimization", {}).get("stage", 0))
    if stage == 3 and not args.no_eval and getattr(args, "protocol", "teacher") == "generate":
        from .. import dist

        if dist.world_size() > 1:
            raise ValueError(f"--deepspeed_config {args.deepspeed_config}: ZeRO-3 over several processes cannot "
                             "validate with --protocol generate (answers of different lengths make the processes' "
                             "parameter gathers differ); validate with the teacher protocol, or afterwards with "
                             "`lisa eval --protocol generate` on the exported model")
    for section in ("optimizer", "scheduler"):
        if section not in cfg or section not in base:
            continue
        params = cfg[section].get("params", {})
        for k, v in list(params.items()):
            if v == "auto":
                params[k] = base[section]["params"].get(k)
    return cfg


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float, projector_lr: float | None,
                 lr_scales: list[tuple[str, float]] = ()):
    """One group at ``lr``, the projector's at ``projector_lr`` (when given), and one per factor of
    ``lr_scales`` ((prefix, factor) pairs, first match wins) at factor x ``lr``. A prefix that no
    trainable parameter has is an error: a typo would otherwise train at the full rate."""
    groups: dict[float | str, list] = {}
    used = set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key: float | str = lr
        if name.startswith("mm_projector.") and projector_lr is not None:
            key = "projector"
        else:
            for prefix, factor in lr_scales:
                if name.startswith(prefix):
                    key, used = lr * factor, used | {prefix}
                    break
        groups.setdefault(key, []).append(p)
    unused = [prefix for prefix, _ in lr_scales if prefix not in used]
    if unused:
        raise ValueError(f"--lr_scales: no trainable parameter starts with {', '.join(map(repr, unused))}")
    out = [{"params": groups.pop(lr, []), "lr": lr, "weight_decay": weight_decay}]
    if "projector" in groups:
        out.append({"params": groups.pop("projector"), "lr": projector_lr, "weight_decay": weight_decay})
    out += [{"params": params, "lr": group_lr, "weight_decay": weight_decay} for group_lr, params in groups.items()]
    return [g for g in out if g["params"]] or out[:1]


def make_optimizer(model, ds_config: dict, args) -> torch.optim.Optimizer:
    opt = ds_config.pop("optimizer", None) or {}
    kind = str(opt.get("type", "AdamW")).lower()
    if kind not in ("adamw", "adam"):
        raise ValueError(f"DeepSpeed config optimizer {opt.get('type')!r}: only Adam/AdamW are supported "
                         "(as a torch optimizer, no compiled DeepSpeed ops)")
    p = opt.get("params", {})
    lr = float(p.get("lr", args.lr))
    wd = float(p.get("weight_decay", args.weight_decay))
    betas = tuple(p.get("betas", (args.beta1, args.beta2)))
    groups = param_groups(model, lr, wd, args.mm_projector_lr, getattr(args, "lr_scale_list", ()))
    if kind == "adam" and wd:
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=float(p.get("eps", 1e-8)), weight_decay=wd)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=float(p.get("eps", 1e-8)), weight_decay=wd)


def create_engine(model: torch.nn.Module, args):
    """(engine, ds_config). The process group must exist (``dist.init_deepspeed_distributed``)."""
    import deepspeed

    ds_config = load_config(args)
    optimizer = make_optimizer(model, ds_config, args)
    ds_config["zero_allow_untested_optimizer"] = True
    zero = ds_config.get("zero_optimization", {})
    if any(isinstance(zero.get(k), dict) and zero[k].get("device", "none") != "none"
           for k in ("offload_optimizer", "offload_param")):
        ds_config.setdefault("zero_force_ds_cpu_optimizer", False)
    sched = ds_config.get("scheduler")
    if sched and len(optimizer.param_groups) > 1 and sched.get("type") == "WarmupDecayLR":
        # one max lr per param group (the projector and --lr_scales groups at their own rates)
        sched["params"]["warmup_max_lr"] = [g["lr"] for g in optimizer.param_groups]
        sched["params"]["warmup_min_lr"] = [0.0 for _ in optimizer.param_groups]
    resolved = copy.deepcopy(ds_config)
    resolved["optimizer"] = {"type": type(optimizer).__name__, "params": {
        "lr": [g["lr"] for g in optimizer.param_groups], "betas": list(optimizer.defaults["betas"]),
        "weight_decay": optimizer.defaults["weight_decay"]}}
    if int(zero.get("stage", 0)) == 3 and getattr(model, "sam", None) is not None:
        from ..model.sam import register_zero3_external_parameters

        register_zero3_external_parameters(model.sam)
    client_scheduler = None
    if getattr(args, "lr_scheduler", "warmup_decay") == "cosine" and "scheduler" not in ds_config:
        from transformers import get_cosine_schedule_with_warmup

        warm, total = warmup_steps(args), total_steps(args)
        resolved["scheduler"] = {"type": "cosine_with_warmup (transformers)",
                                 "params": {"warmup_num_steps": warm, "total_num_steps": total}}

        def client_scheduler(opt):
            return get_cosine_schedule_with_warmup(opt, num_warmup_steps=warm, num_training_steps=total)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config,
                                           lr_scheduler=client_scheduler)
    return engine, resolved
