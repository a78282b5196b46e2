"""``lisa chat``: the original ``chat.py`` flags, plus one-shot mode, ``--device`` and ``--json``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..images import ImageError, load_image
from ..inference.flags import add_model_args, load_pipeline


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
        if not result.masks and pipe.segments:  # a plain LLaVA model never makes masks
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
