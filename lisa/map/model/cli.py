"""``lisa map params``: every trainable tensor of the map detector with its shape, per-part counts and
the trainable share; the check to run when the loss does not go down."""

from __future__ import annotations

import argparse
import sys

from .config import PRESETS


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lisa map params", description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--checkpoint", default=None, help="a trained detector folder (instead of a preset)")
    ap.add_argument("--preset", choices=list(PRESETS), default="7b", help="detector size (default 7b)")
    ap.add_argument("--llm_path", default=None, help="causal LM / LLaVA / LISA folder (default: the preset's)")
    ap.add_argument("--vision_path", default=None, help="CLIP folder (default: the preset's)")
    ap.add_argument("--qformer_pretrained", default=None, help="'blip2', a BLIP-2 folder, or 'none'")
    ap.add_argument("--stage", type=int, choices=(2, 3), default=2, help="2: LLM frozen; 3: LLM trained too")
    ap.add_argument("--llm_lora_r", type=int, default=0, help="stage 3 with LoRA of this rank (0: full)")
    ap.add_argument("--meta", action="store_true",
                    help="shapes only: build from the preset's configs on the meta device, read no weights "
                         "(works without the 7B folders)")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    import torch

    from ..checkpoint.build import build_from_config
    from ..checkpoint.io import DetectorCheckpointError, load_detector
    from ..checkpoint.sources import SourceError
    from .config import preset_config
    from .report import format_report
    from .stages import apply_stage

    try:
        if args.checkpoint:
            model = load_detector(args.checkpoint)
        else:
            cfg = preset_config(args.preset, llm_path=args.llm_path, vision_path=args.vision_path,
                                qformer_pretrained=args.qformer_pretrained)
            if args.meta:
                cfg.llm_path = cfg.vision_path = None
                cfg.qformer_pretrained, cfg.tokenizer = "none", "bytes"
                with torch.device("meta"):
                    model = build_from_config(cfg)
            else:
                model = build_from_config(cfg)
        apply_stage(model, args.stage, args.llm_lora_r)
    except (SourceError, DetectorCheckpointError, ValueError) as e:
        print(f"lisa map params: {e}", file=sys.stderr)
        return 2
    print(format_report(model))
    return 0
