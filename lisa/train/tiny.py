"""Tiny base models for tests and demos of the base-LLaVA paths (no weights are downloaded).

``make_tiny_llava(out)`` writes a plain LLaVA folder in the released layout (LLaMA + CLIP + linear
projector, a tokenizer without ``[SEG]`` / ``<im_start>`` / ``<im_end>``, like the LLaMA-2 based
LLaVA that LISA-13B starts from). ``write_tiny_sam(path)`` writes a tiny SAM ``.pth`` with official
key names and its ``sam_config.json`` beside it (``--vision_pretrained``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch


def make_tiny_llava(out, seed: int = 0, preset: str = "tiny"):
    """Write the tiny LLaVA folder; returns (model, tokenizer)."""
    from ..checkpoint.saver import save_pretrained
    from ..checkpoint.tiny import TINY_PRESETS, TINY_TEXTS, build_tiny_config
    from ..model.lisa import LisaForSegmentation
    from ..tokenization import train_llama_style_tokenizer

    out = Path(out)
    tok_dir = out / ".tokenizer_build"
    tokenizer = train_llama_style_tokenizer(TINY_TEXTS, TINY_PRESETS[preset]["vocab"], tok_dir)
    torch.manual_seed(seed)
    cfg = build_tiny_config(len(tokenizer), preset, has_seg_head=False, sam=None, mm_use_im_start_end=False)
    model = LisaForSegmentation(cfg).eval()
    save_pretrained(model, tokenizer, out, format="lisa", progress=False)
    shutil.rmtree(tok_dir, ignore_errors=True)
    return model, tokenizer


def write_tiny_sam(path, seed: int = 0, preset: str = "tiny") -> Path:
    """A tiny random SAM in the official checkpoint layout (``sam_vit_*.pth`` names)."""
    from ..checkpoint.sam_keys import hf_to_official
    from ..checkpoint.tiny import TINY_PRESETS
    from ..model.sam import build_sam, sam_config

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = sam_config(**TINY_PRESETS[preset]["sam"])
    sam = build_sam(cfg)
    state = {k: v for k, v in sam.state_dict().items() if k != "prompt_encoder.shared_embedding.positional_embedding"}
    torch.save(hf_to_official(state), path)
    (path.parent / "sam_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
    return path
