"""``lisa eval``: gIoU / cIoU of a model folder or a training checkpoint over ``--val_dataset``.

Same flags as ``lisa train`` (``--version``, ``--dataset_dir``, ``--val_dataset``, ``--exp_name``,
``--log_base_dir``, ...) plus ``--protocol``, ``--all_queries`` and ``--save_masks``. With ``--resume``
(a run folder, ``ckpt_model`` or tag folder) the checkpoint is merged in memory and evaluated.
Data-parallel when launched with torchrun / deepspeed; metrics go to ``runs/<exp>/metrics.json``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

log = logging.getLogger("lisa.eval")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _precision(args) -> str:
    return args.precision or ("bf16" if torch.cuda.is_available() else "fp32")


def load_model_for_eval(args):
    """(model, tokenizer) on this process's device in the requested precision."""
    from ..train import dist

    if args.resume:
        from ..export import load_merged

        model, tokenizer, _ = load_merged(args.resume, version=None if _run_near(args.resume) else args.version,
                                          tag=args.tag, lora_alpha=None, vision_tower=args.vision_tower,
                                          sam_config=args.sam_config, use_mm_start_end=args.use_mm_start_end,
                                          progress=dist.is_main())
        model.to(DTYPES[_precision(args)])
    else:
        from ..checkpoint.loader import load_pretrained

        model, tokenizer = load_pretrained(args.version, vision_tower=args.vision_tower,
                                           sam_config_file=args.sam_config, precision=_precision(args),
                                           model_max_length=args.model_max_length, progress=dist.is_main())
    return model.to(dist.device()).eval(), tokenizer


def _run_near(path) -> bool:
    p = Path(path)
    return any((c / "model_config.json").is_file() for c in (p, p.parent, p.parent.parent))


def run_eval(args, model, tokenizer, run_dir: Path) -> list[dict]:
    from ..train import dist
    from ..train.session import build_val_sets, write_metrics
    from .runner import evaluate, format_table

    val_sets = build_val_sets(args, model.config)
    results = [evaluate(model, tokenizer, ds, args.protocol, all_queries=args.all_queries,
                        conv_type=args.conv_type, max_new_tokens=args.max_new_tokens,
                        save_masks=args.save_masks, name=name)
               for name, ds in val_sets]
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        print(format_table(results), flush=True)
        path = write_metrics(run_dir, results)
        print(f"metrics: {path}")
    return results


def main(argv=None) -> int:
    from ..checkpoint.errors import CheckpointError
    from ..data.problems import DataError
    from ..train import dist
    from ..train.args import build_parser, resolve

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser("lisa eval")
    ap.description = __doc__.splitlines()[0]
    ap.set_defaults(precision=None, eval_only=True, auto_resume=False)
    args = ap.parse_args(argv)
    try:
        args = resolve(args, argv)
    except ValueError as e:
        ap.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        dist.init_torch_distributed()
        model, tokenizer = load_model_for_eval(args)
        run_eval(args, model, tokenizer, Path(args.log_base_dir) / args.exp_name)
    except (ValueError, CheckpointError, DataError, FileNotFoundError) as e:
        print(f"lisa eval: {e}", file=sys.stderr)
        return 2
    return 0
