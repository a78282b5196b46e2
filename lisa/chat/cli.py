"""``lisa chat``: the original ``chat.py`` flags, plus one-shot mode, ``--device`` and ``--json``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..images import ImageError, load_image


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """Model flags shared by chat, app and serve (names as the original scripts)."""
    ap.add_argument("--version", default="xinlai/LISA-13B-llama2-v1", help="model folder")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
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
    from ..inference.pipeline import LisaPipeline

    return LisaPipeline.from_pretrained(
        args.version, precision=args.precision, device=args.device, vision_tower=args.vision_tower,
        sam_config=args.sam_config, load_in_4bit=args.load_in_4bit, load_in_8bit=args.load_in_8bit,
        conv_type=args.conv_type, max_new_tokens=args.max_new_tokens, model_max_length=args.model_max_length)


def run_one(pipe, image_path: str, prompt: str, vis_save_path: str, as_json: bool) -> dict:
    from ..inference.visualize import save_masks

    image = load_image(image_path)
    result = pipe(image, prompt)
    stem = Path(image_path).name.split(".")[0]
    files = save_masks(np.asarray(image), result.masks, vis_save_path, stem)
    report = {"text": result.text, "mask_files": files, "mask_areas": result.mask_areas,
              "timings": {k: v for k, v in result.timings.items() if k != "per_token"},
              "cache_hit": result.cache_hit}
    if as_json:
        print(json.dumps(report))
    else:
        print("text_output:", result.text)
        for f in files:
            print(f"{f} has been saved.")
        if not result.masks:
            print("(no [SEG] in the answer: no mask)")
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="lisa chat", description="Chat with a LISA model.")
    add_model_args(ap)
    ap.add_argument("--vis_save_path", default="./vis_output")
    ap.add_argument("--image", default=None, help="one-shot mode: image path")
    ap.add_argument("--prompt", default=None, help="one-shot mode: instruction")
    ap.add_argument("--json", action="store_true", help="print one JSON object per answer")
    args = ap.parse_args(argv)
    if (args.image is None) != (args.prompt is None):
        ap.error("one-shot mode needs both --image and --prompt")
    try:
        pipe = load_pipeline(args)
    except (ValueError, OSError) as e:
        print(f"lisa chat: {e}", file=sys.stderr)
        return 2
    if args.image is not None:
        try:
            run_one(pipe, args.image, args.prompt, args.vis_save_path, args.json)
        except (ImageError, ValueError) as e:
            print(f"lisa chat: {e}", file=sys.stderr)
            return 2
        return 0
    last_image = None
    while True:
        try:
            prompt = input("Please input your prompt: ")
            image_path = input("Please input the image path: ").strip() or last_image
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not image_path:
            print("No image given yet.")
            continue
        try:
            run_one(pipe, image_path, prompt, args.vis_save_path, args.json)
            last_image = image_path
        except (ImageError, ValueError) as e:
            print(f"Error: {e}")
