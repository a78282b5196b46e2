"""``lisa make-tiny OUT``: a tiny random but complete checkpoint in the released LISA layout.

It has a real tokenizer with ``[SEG]``, a 2-layer LLaMA, a tiny CLIP folder named by a relative
path in config.json, and a tiny SAM with its ``sam_config.json``. ``lisa chat --version OUT`` loads
it with no other flag; tests and newcomers use it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..conversation import LLAVA_V1_SYSTEM
from ..model.config import LisaConfig
from ..model.lisa import LisaForSegmentation
from ..model.sam import sam_config

TINY_TEXTS = [
    LLAVA_V1_SYSTEM,
    "USER: <image>\nCan you segment the red circle in this image? ASSISTANT: It is [SEG].",
    "Please segment the dog in this image. Sure, [SEG]. What is the cat in this image?",
    "Please output segmentation mask and explain why. Sure, the segmentation result is [SEG].",
    "Which shape is blue? The largest shape, the smallest square, the leftmost triangle.",
    "How many shapes are there? There are 3 shapes. What colour is the circle? Yellow. Green.",
    "the quick brown fox jumps over the lazy dog 0123456789 , . ! ? ' \" : ; ( ) - /",
]

TINY_PRESETS = {
    "tiny": dict(llm=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
                 clip=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=56, patch_size=14),
                 sam=dict(image_size=128, patch_size=16, window_size=4, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=2, global_attn_indexes=[1], prompt_dim=32,
                          decoder_mlp_dim=64, decoder_heads=2),
                 vocab=400),
}


def build_tiny_config(vocab_size: int, preset: str = "tiny", llm_fields: dict | None = None,
                      tower: str = "clip", **overrides) -> LisaConfig:
    """``llm_fields`` replace fields of the LLaMA config (another family, see ``tiny_families``);
    ``tower`` "clip" or "siglip"."""
    from .tiny_families import tower_config

    p = TINY_PRESETS[preset]
    llm = dict(model_type="llama", vocab_size=vocab_size, max_position_embeddings=2048, rms_norm_eps=1e-6,
               num_key_value_heads=p["llm"]["num_attention_heads"], tie_word_embeddings=False,
               bos_token_id=1, eos_token_id=2, pad_token_id=0, **p["llm"])
    llm.update(llm_fields or {})
    clip = dict(model_type="clip_vision_model", hidden_act="quick_gelu", layer_norm_eps=1e-5,
                projection_dim=32, **p["clip"])
    vision = tower_config(tower, clip)
    sam = sam_config(**p["sam"]).to_dict()
    cfg = LisaConfig(llm=llm, vision=vision, sam=sam, vision_tower="vision_tower",
                     mm_hidden_size=vision["hidden_size"], out_dim=p["sam"]["prompt_dim"])
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def make_tiny(out, seed: int = 0, preset: str = "tiny", format: str = "lisa", shard_size=None):
    """Write the tiny checkpoint; returns (model, tokenizer)."""
    from ..tokenization import add_lisa_tokens, seg_token_id, train_llama_style_tokenizer
    from .saver import save_pretrained

    out = Path(out)
    tok_dir = out / ".tokenizer_build"
    tokenizer = train_llama_style_tokenizer(TINY_TEXTS, TINY_PRESETS[preset]["vocab"], tok_dir)
    add_lisa_tokens(tokenizer, use_mm_start_end=True)
    torch.manual_seed(seed)
    cfg = build_tiny_config(len(tokenizer), preset)
    model = LisaForSegmentation(cfg, seg_token_id=seg_token_id(tokenizer)).eval()
    save_pretrained(model, tokenizer, out, format=format, max_shard_size=shard_size or "10GB", progress=False)
    import shutil
    shutil.rmtree(tok_dir, ignore_errors=True)
    return model, tokenizer


LLAVA_VERSIONS = ("v1", "v1.5", "llama2")


def make_tiny_llava(out, seed: int = 0, version: str = "v1.5", preset: str = "tiny", llm: str = "llama",
                    tower: str = "clip"):
    """A tiny base LLaVA folder (no SAM, no [SEG]) as training starts from: ``v1`` (LLaVA-Lightning
    v1-1: linear projector, ``<im_patch>/<im_start>/<im_end>`` in the tokenizer), ``llama2``
    (llava-llama-2-13b-chat-lightning: linear projector, none of those tokens) or ``v1.5``
    (2-layer GELU MLP projector, ``image_aspect_ratio "pad"`` as LLaVA-1.5's config). ``llm``
    "llama3" / "qwen2" and ``tower`` "siglip" give the other families of ``tiny_families``."""
    from ..tokenization import train_llama_style_tokenizer
    from .saver import save_pretrained
    from .tiny_families import LLM_FAMILIES, llm_fields, train_byte_level_tokenizer

    if version not in LLAVA_VERSIONS:
        raise ValueError(f"version must be one of {LLAVA_VERSIONS}")
    if llm not in LLM_FAMILIES:
        raise ValueError(f"llm must be one of {LLM_FAMILIES}")
    out = Path(out)
    vocab = TINY_PRESETS[preset]["vocab"]
    if llm == "llama":
        tokenizer = train_llama_style_tokenizer(TINY_TEXTS, vocab, out / ".tokenizer_build")
    else:
        tokenizer = train_byte_level_tokenizer(TINY_TEXTS, vocab, out / ".tokenizer_build", family=llm)
    if version == "v1":
        tokenizer.add_tokens(["<im_patch>"], special_tokens=True)
        tokenizer.add_tokens(["<im_start>", "<im_end>"], special_tokens=True)
    torch.manual_seed(seed)
    cfg = build_tiny_config(len(tokenizer), preset, llm_fields=llm_fields(llm, tokenizer), tower=tower)
    if version == "v1.5":
        cfg.extra["image_aspect_ratio"] = "pad"
    cfg.has_seg_head = False
    cfg.sam = None
    cfg.projector_type = "mlp2x_gelu" if version == "v1.5" else "linear"
    cfg.mm_use_im_start_end = version == "v1"
    model = LisaForSegmentation(cfg).eval()
    save_pretrained(model, tokenizer, out, format="lisa", progress=False)
    import shutil
    shutil.rmtree(out / ".tokenizer_build", ignore_errors=True)
    return model, tokenizer


def write_tiny_sam(path, seed: int = 0, preset: str = "tiny") -> Path:
    """A tiny random SAM in the official checkpoint layout (``sam_vit_*.pth`` names) with its
    ``sam_config.json`` beside it (what ``--vision_pretrained`` points at)."""
    import json

    from ..model.sam import build_sam
    from .sam_keys import hf_to_official

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = sam_config(**TINY_PRESETS[preset]["sam"])
    state = {k: v for k, v in build_sam(cfg).state_dict().items()
             if k != "prompt_encoder.shared_embedding.positional_embedding"}
    torch.save(hf_to_official(state), path)
    (path.parent / "sam_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
    return path
