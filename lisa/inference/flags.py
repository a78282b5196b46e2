"""The model flags shared by ``lisa chat``, ``lisa app`` and ``lisa serve`` (the original scripts'
names, and LLaVA's ``cli.py`` spellings of the same things), and the pipeline they load."""

from __future__ import annotations

import argparse

from ..conversation import TEMPLATES
from ..precision import PRECISIONS, default_precision
from .limits import MAX_MASKS


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """Model flags shared by chat, app and serve (names as the original scripts; LLaVA's too)."""
    ap.add_argument("--version", "--model-path", "--model_path", dest="version", default="xinlai/LISA-13B-llama2-v1",
                    help="model folder or Hugging Face Hub id (owner/name[@revision]), e.g. xinlai/LISA-7B-v1 "
                    "(LLaVA: --model-path)")
    ap.add_argument("--revision", default=None, help="Hub revision of --version: branch, tag or commit")
    ap.add_argument("--model-base", "--model_base", dest="model_base", default=None,
                    help="base model folder when --version is a LoRA folder (LLaVA's adapter folder or a "
                    "`lisa train` run): the LoRA is applied in memory, nothing is written")
    ap.add_argument("--precision", choices=PRECISIONS, default=None,
                    help="default: bf16 on CUDA, fp32 elsewhere")
    ap.add_argument("--image_size", type=int, default=1024, help="SAM input size (taken from the model)")
    ap.add_argument("--model_max_length", type=int, default=512)
    ap.add_argument("--lora_r", type=int, default=8, help="accepted for compatibility; unused")
    ap.add_argument("--vision-tower", "--vision_tower", dest="vision_tower", default=None,
                    help="CLIP / SigLIP folder or Hub id (overrides the name in config.json)")
    ap.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=0)
    ap.add_argument("--load_in_8bit", "--load-8bit", dest="load_in_8bit", action="store_true")
    ap.add_argument("--load_in_4bit", "--load-4bit", dest="load_in_4bit", action="store_true")
    ap.add_argument("--use_mm_start_end", action="store_true", default=True,
                    help="accepted for compatibility; the model config decides")
    ap.add_argument("--conv_type", "--conv-mode", "--conv_mode", dest="conv_type", default=None,
                    choices=sorted(TEMPLATES), help="prompt template (default: the one the model was trained "
                    "with, else llava_v1; lisa chat infers it for plain LLaVA models from the folder name, as LLaVA)")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    ap.add_argument("--sam_config", default=None, help="SamConfig JSON for a SAM other than ViT-H")
    ap.add_argument("--max_new_tokens", "--max-new-tokens", dest="max_new_tokens", type=int, default=512)
    ap.add_argument("--temperature", type=float, default=None,
                    help="sampling temperature; 0 answers greedily (default: greedy; in lisa chat 0.2 for plain "
                    "LLaVA models, as LLaVA's cli.py)")
    ap.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=None,
                    help="nucleus sampling: sample among the most likely tokens up to this probability")
    ap.add_argument("--no_compile", action="store_true",
                    help="on CUDA, decode eagerly and leave SAM/CLIP uncompiled (no warm-up at load); "
                         "CPU, MPS and 4/8-bit models always run eagerly")
    ap.add_argument("--max_masks", type=int, default=MAX_MASKS,
                    help="masks decoded per answer; further [SEG]s in an answer get none")


def load_pipeline(args, merged_loader=None):
    """The pipeline of the model flags. With ``--model-base``, ``--version`` is a LoRA folder: LLaVA's
    adapter folders are applied here; other LoRA sources (a training run) need ``merged_loader``
    (``lisa.export.load_merged``, which the commands pass in)."""
    from .pipeline import LisaPipeline

    if getattr(args, "model_base", None):
        return _with_base(args, merged_loader)
    return LisaPipeline.from_pretrained(
        args.version, precision=args.precision, device=args.device, vision_tower=args.vision_tower,
        sam_config=args.sam_config, load_in_4bit=args.load_in_4bit, load_in_8bit=args.load_in_8bit,
        conv_type=args.conv_type, max_new_tokens=args.max_new_tokens, model_max_length=args.model_max_length,
        revision=getattr(args, "revision", None), temperature=getattr(args, "temperature", None),
        top_p=getattr(args, "top_p", None), max_masks=getattr(args, "max_masks", MAX_MASKS),
        compile=not getattr(args, "no_compile", False))


def _with_base(args, merged_loader):
    from pathlib import Path

    from ..checkpoint.adapters import apply_adapter_folder, is_adapter_folder
    from ..checkpoint.hub import resolve_model
    from ..checkpoint.loader import load_pretrained
    from ..precision import to_dtype
    from .pipeline import LisaPipeline, pick_device

    dev = pick_device(args.device)
    precision = args.precision or default_precision(dev.type == "cuda")
    if args.load_in_4bit and args.load_in_8bit:
        raise ValueError("choose one of --load_in_4bit and --load_in_8bit")
    if not Path(args.version).exists():
        raise ValueError(f"--model-path {args.version}: not found")
    base = resolve_model(args.model_base, progress=False)
    if is_adapter_folder(args.version):
        model, tokenizer = load_pretrained(base, vision_tower=args.vision_tower,
                                           sam_config_file=args.sam_config, precision="fp32",
                                           model_max_length=args.model_max_length, progress=False)
        apply_adapter_folder(model, args.version)
    elif merged_loader is not None:
        model, tokenizer, _ = merged_loader(args.version, version=str(base), vision_tower=args.vision_tower,
                                            sam_config=args.sam_config, progress=False)
    else:
        raise ValueError(f"--model-path {args.version}: not a LoRA adapter folder (no adapter_config.json)")
    model.to(to_dtype(precision))
    quant = "4bit" if args.load_in_4bit else "8bit" if args.load_in_8bit else None
    if quant:
        from ..model.quantize import quantize_llm

        quantize_llm(model, quant, dev)
    else:
        model.to(dev)
    return LisaPipeline.for_model(model.eval(), tokenizer, conv_type=args.conv_type,
                                  max_new_tokens=args.max_new_tokens, model_max_length=args.model_max_length,
                                  temperature=getattr(args, "temperature", None), top_p=getattr(args, "top_p", None),
                                  max_masks=getattr(args, "max_masks", MAX_MASKS),
                                  compile=not getattr(args, "no_compile", False))
