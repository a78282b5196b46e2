"""What ``lisa eval`` and ``lisa train --eval_only`` / validation share: the validation sets named by
``--val_dataset``, the model to score (a model folder, or a training checkpoint merged in memory)
and ``metrics.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .. import dist
from ..checkpoint.run_folder import METRICS_FILE, atomic_write, run_dir_near
from ..precision import default_precision, to_dtype
from .runner import evaluate, format_table

log = logging.getLogger("lisa.eval")

def build_val_sets(args, model_config) -> list:
    """``[(name, ValDataset)]`` for every set of ``args.val_dataset`` (joined by ``||``)."""
    from ..data import build_val_dataset

    names = [n for n in args.val_dataset.split("||") if n]
    return [(n, build_val_dataset(args.dataset_dir, n, clip_size=model_config.clip_image_size,
                                  sam_size=model_config.sam_image_size, conv_type=args.conv_type,
                                  vision=model_config.vision_input,
                                  use_mm_start_end=model_config.mm_use_im_start_end, strict=args.strict_data))
            for n in names]


def write_metrics(run_dir: Path, results: list[dict]) -> Path:
    out = Path(run_dir) / METRICS_FILE
    data = results[0] if len(results) == 1 else {"sets": results}
    atomic_write(out, json.dumps(data, indent=2))
    return out


def _precision(args) -> str:
    return args.precision or default_precision()


def load_model_for_eval(args):
    """(model, tokenizer) on this process's device in the requested precision."""
    if args.resume:
        from ..export import load_merged

        model, tokenizer, _ = load_merged(args.resume, version=None if run_dir_near(args.resume) else args.version,
                                          tag=args.tag, lora_alpha=None, vision_tower=args.vision_tower,
                                          sam_config=args.sam_config, use_mm_start_end=args.use_mm_start_end,
                                          progress=dist.is_main())
        model.to(to_dtype(_precision(args)))
    else:
        from ..checkpoint.loader import load_pretrained

        model, tokenizer = load_pretrained(args.version, vision_tower=args.vision_tower,
                                           sam_config_file=args.sam_config, precision=_precision(args),
                                           model_max_length=args.model_max_length, progress=dist.is_main())
    return model.to(dist.device()).eval(), tokenizer


def run_eval(args, model, tokenizer, run_dir: Path) -> list[dict]:
    """Score ``model`` on every validation set; rank 0 prints the table and writes ``metrics.json``."""
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
