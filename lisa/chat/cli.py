"""``lisa chat``: the original ``chat.py`` flags, plus one-shot mode, ``--device`` and ``--json``.

Two interactive modes:

- LISA models, as ``chat.py``: a prompt, then an image path (empty: the last image), one turn each;
- a conversation on one image, as LLaVA's ``cli.py`` (plain LLaVA models, or any model with
  ``--image-file``): ``USER:`` / ``ASSISTANT:`` turns that continue the same conversation, the answer
  streamed as it is generated, an empty line ends it. LLaVA models sample at ``--temperature 0.2``
  by default (``--temperature 0`` answers greedily).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..images import ImageError, read_rgb
from ..inference.flags import add_model_args, load_pipeline


def _printer(text: str) -> None:
    print(text, end="", flush=True)


def _save(pipe, image, result, image_path: str, vis_save_path: str) -> list[str]:
    from ..inference.visualize import save_masks

    if not result.masks:
        return []
    return save_masks(image, result.masks, vis_save_path, Path(image_path).name.split(".")[0])


def run_one(pipe, image_path: str, prompt: str, vis_save_path: str, as_json: bool, stream: bool = False) -> dict:
    image = read_rgb(image_path)
    if stream and not as_json:
        print("text_output: ", end="", flush=True)
        result = pipe(image, prompt, on_text=_printer)
        print()
    else:
        result = pipe(image, prompt)
    files = _save(pipe, image, result, image_path, vis_save_path)
    report = {"text": result.text, "mask_files": files, "mask_areas": result.mask_areas,
              "timings": {k: v for k, v in result.timings.items() if k != "per_token"},
              "cache_hit": result.cache_hit}
    if as_json:
        print(json.dumps(report))
    else:
        if not stream:
            print("text_output:", result.text)
        for f in files:
            print(f"{f} has been saved.")
        if not result.masks and pipe.segments:  # a plain LLaVA model never makes masks
            print("(no [SEG] in the answer: no mask)")
        if result.masks_dropped:
            print(f"({result.masks_dropped} more [SEG] in the answer got no mask: --max_masks {pipe.max_masks})")
    return report


def _role_names(pipe) -> tuple[str, str]:
    from ..conversation import get_template

    roles = get_template(pipe.conv_type).roles
    plain = all(r.replace(" ", "").isalnum() for r in roles)
    return (roles[0], roles[1]) if plain else ("USER", "ASSISTANT")


def converse(pipe, image_path: str, vis_save_path: str, as_json: bool = False) -> int:
    """LLaVA's ``cli.py``: one image, turns until an empty line (or end of input)."""
    try:
        image = read_rgb(image_path)
    except ImageError as e:
        print(f"lisa chat: {e}", file=sys.stderr)
        return 2
    user, assistant = _role_names(pipe)
    history: list[tuple[str, str]] = []
    while True:
        try:
            prompt = input(f"{user}: ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not prompt.strip():
            print("exit...")
            return 0
        if not as_json:
            print(f"{assistant}: ", end="", flush=True)
        try:
            result = pipe(image, prompt, history=history, on_text=None if as_json else _printer)
        except ValueError as e:
            print(f"\nError: {e}")
            continue
        files = _save(pipe, image, result, image_path, vis_save_path)
        if as_json:
            print(json.dumps({"text": result.text, "mask_files": files, "mask_areas": result.mask_areas}))
        else:
            print()
            for f in files:
                print(f"{f} has been saved.")
        history.append((prompt, result.text))


def _as_llava_cli(pipe, args) -> None:
    """LLaVA's ``cli.py`` defaults for plain LLaVA models: the conversation mode inferred from the
    model's name (with its warning when ``--conv-mode`` says otherwise) and sampling at 0.2."""
    from ..inference.pipeline import pick_template
    from ..inference.request import Sampling

    if args.temperature is None:
        pipe.sampling = Sampling(pipe.chat_temperature, args.top_p)
    inferred = pick_template(pipe.model, str(args.version).split("@")[0])
    if args.conv_type is None:
        pipe.conv_type = inferred
    elif inferred != args.conv_type and not pipe.segments:
        print(f"[WARNING] the auto inferred conversation mode is {inferred}, while `--conv-mode` is "
              f"{args.conv_type}, using {args.conv_type}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lisa chat", description="Chat with a LISA or LLaVA model.")
    add_model_args(ap)
    ap.add_argument("--vis_save_path", default="./vis_output")
    ap.add_argument("--image", default=None, help="one-shot mode: image path")
    ap.add_argument("--image-file", "--image_file", dest="image_file", default=None,
                    help="a conversation about this image (LLaVA's cli.py); with --prompt: one-shot")
    ap.add_argument("--prompt", default=None, help="one-shot mode: instruction")
    ap.add_argument("--json", action="store_true", help="print one JSON object per answer")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.image is not None and args.image_file is not None:
        ap.error("give the image once: --image or --image-file")
    if args.image_file is None and (args.image is None) != (args.prompt is None):
        ap.error("one-shot mode needs both --image and --prompt")
    try:
        from ..export import load_merged

        pipe = load_pipeline(args, merged_loader=load_merged)
    except (ValueError, OSError) as e:
        print(f"lisa chat: {e}", file=sys.stderr)
        return 2
    _as_llava_cli(pipe, args)
    image = args.image or args.image_file
    if args.prompt is not None:
        try:
            run_one(pipe, image, args.prompt, args.vis_save_path, args.json, stream=True)
        except (ImageError, ValueError) as e:
            print(f"lisa chat: {e}", file=sys.stderr)
            return 2
        return 0
    if args.image_file is not None:
        return converse(pipe, args.image_file, args.vis_save_path, args.json)
    if not pipe.model.config.has_seg_head:
        try:
            path = input("Please input the image path: ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        return converse(pipe, path, args.vis_save_path, args.json)
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
