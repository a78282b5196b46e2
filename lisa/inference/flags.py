"""The model flags shared by ``lisa chat``, ``lisa app`` and ``lisa serve`` (the original scripts'
names), and the pipeline they load."""

from __future__ import annotations

import argparse

from ..precision import PRECISIONS


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """Model flags shared by chat, app and serve (names as the original scripts)."""
    ap.add_argument("--version", default="xinlai/LISA-13B-llama2-v1", help="model folder")
    ap.add_argument("--precision", choices=PRECISIONS, default=None,
                    help="default: bf16 on CUDA, fp32 elsewhere")
    ap.add_argument("--image_size", type=int, default=1024, help="SAM input size (taken from the model)")
    ap.add_argument("--model_max_length", type=int, default=512)
    ap.add_argument("--lora_r", type=int, default=8, help="accepted for compatibility; unused")
    ap.add_argument("--vision-tower", "--vision_tower", dest="vision_tower", default=None,
                    help="local CLIP folder (overrides the name in config.json)")
    ap.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=0)
    ap.add_argument("--load_in_8bit", action="store_true")
    ap.add_argument("--load_in_4bit", action="store_true")
    ap.add_argument("--use_mm_start_end", action="store_true", default=True,
                    help="accepted for compatibility; the model config decides")
    ap.add_argument("--conv_type", default="llava_v1", choices=["llava_v1", "llava_llama_2"])
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    ap.add_argument("--sam_config", default=None, help="SamConfig JSON for a SAM other than ViT-H")
    ap.add_argument("--max_new_tokens", type=int, default=512)


def load_pipeline(args):
    from .pipeline import LisaPipeline

    return LisaPipeline.from_pretrained(
        args.version, precision=args.precision, device=args.device, vision_tower=args.vision_tower,
        sam_config=args.sam_config, load_in_4bit=args.load_in_4bit, load_in_8bit=args.load_in_8bit,
        conv_type=args.conv_type, max_new_tokens=args.max_new_tokens, model_max_length=args.model_max_length)
