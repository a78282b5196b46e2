"""``lisa export --run_dir runs/<exp> --save_path DIR [--format lisa]``."""

from __future__ import annotations

import argparse
import sys

from ..precision import PRECISIONS


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lisa export", description=(
        "Consolidate a training run's DeepSpeed checkpoint, merge LoRA into the base weights and write a "
        "model folder for `lisa chat`. The source may also be a DeepSpeed checkpoint folder or a "
        "consolidated pytorch_model.bin (this project's or the original LISA's zero_to_fp32 output) "
        "together with --version BASE_DIR."))
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run_dir", help="runs/<exp> of `lisa train`")
    src.add_argument("--source", "--weight", dest="source",
                     help="DeepSpeed checkpoint folder, pytorch_model.bin, or a folder of shards")
    ap.add_argument("--save_path", required=True, help="output folder")
    ap.add_argument("--format", default="native", choices=["native", "lisa", "llava", "llava-hf"],
                    help="native: safetensors with every part; lisa: the released LISA layout (.bin shards); "
                    "llava: the original LLaVA repository's (LlavaLlamaForCausalLM, as merge_lora_weights.py "
                    "writes it); llava-hf: transformers' LlavaForConditionalGeneration with its processor")
    ap.add_argument("--version", default=None, help="base model (folder or Hub id) the training started from "
                    "(needed when the source is not inside a run folder)")
    ap.add_argument("--tag", default=None, help="checkpoint tag: best, latest or global_stepN "
                    "(default: best when known, else the newest)")
    ap.add_argument("--precision", default=None, choices=PRECISIONS,
                    help="dtype of LLM/projector/CLIP (SAM and [SEG] head stay fp32); default: training precision")
    ap.add_argument("--lora_alpha", type=float, default=None, help="LoRA alpha (default: the run's, else 16)")
    ap.add_argument("--vision-tower", "--vision_tower", dest="vision_tower", default=None,
                    help="CLIP folder or Hub id (overrides the name in config.json)")
    ap.add_argument("--sam_config", default=None)
    ap.add_argument("--no_mm_start_end", dest="use_mm_start_end", action="store_false",
                    help="the original training ran without <im_start>/<im_end>")
    ap.add_argument("--max_shard_size", default="10GB")
    return ap


def main(argv=None) -> int:
    from ..checkpoint.errors import CheckpointError
    from . import export

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    import logging
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = export(args.run_dir or args.source, args.save_path, args.format, version=args.version,
                     tag=args.tag, precision=args.precision, lora_alpha=args.lora_alpha,
                     vision_tower=args.vision_tower, sam_config=args.sam_config,
                     use_mm_start_end=args.use_mm_start_end, max_shard_size=args.max_shard_size)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"lisa export: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
