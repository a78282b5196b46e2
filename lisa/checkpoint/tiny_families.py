"""Tiny stand-ins for other LLaVA model families: their tokenizers and config fields.

- ``llama3``: a byte-level BPE tokenizer with ``<|begin_of_text|>`` as BOS (tiktoken style, as
  Llama-3), and Llama-3 rope scaling (``rope_type: llama3``) in the language model's config;
- ``qwen2``: a byte-level BPE tokenizer without BOS, ``<|im_start|>`` / ``<|im_end|>`` special
  tokens (Qwen2 style), a Qwen2 language model with grouped-query attention;
- ``siglip``: a SigLIP vision tower (``siglip_vision_model``) instead of CLIP.
"""

from __future__ import annotations

from pathlib import Path

LLM_FAMILIES = ("llama", "llama3", "qwen2")
TOWERS = ("clip", "siglip")

_SPECIALS = {
    "llama3": ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"),
    "qwen2": ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
}
# (bos, eos, pad) of each family's tokenizer
_ROLES = {
    "llama3": ("<|begin_of_text|>", "<|end_of_text|>", "<|end_of_text|>"),
    "qwen2": (None, "<|im_end|>", "<|endoftext|>"),
}


def train_byte_level_tokenizer(texts, vocab_size: int, out_dir, family: str = "qwen2",
                               model_max_length: int = 2048):
    """A small byte-level BPE tokenizer in the style of ``family`` ("llama3" or "qwen2"), saved as an
    HF tokenizer folder; returns it as :func:`lisa.tokenization.load_tokenizer` loads it."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from ..tokenization import load_tokenizer

    if family not in _SPECIALS:
        raise ValueError(f"family must be one of {sorted(_SPECIALS)}, got {family!r}")
    specials = _SPECIALS[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(specials), show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([t for t in texts if t], trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    bos, eos, pad = _ROLES[family]
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, bos_id)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    others = [t for t in specials if t not in (bos, eos, pad)]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   extra_special_tokens=others, padding_side="right",
                                   model_max_length=model_max_length)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return load_tokenizer(out, model_max_length=model_max_length)


def llm_fields(family: str, tokenizer) -> dict:
    """Config fields that make the tiny language model one of ``family``."""
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if family == "llama3":
        return dict(ids, rope_theta=500000.0, max_position_embeddings=4096,
                    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 1024})
    if family == "qwen2":
        return dict(ids, model_type="qwen2", num_key_value_heads=2, rope_theta=1000000.0,
                    max_position_embeddings=4096)
    return {}


def tower_config(tower: str, clip: dict) -> dict:
    """The vision config of ``tower`` at the sizes of the tiny CLIP ``clip``."""
    if tower == "clip":
        return clip
    if tower == "siglip":
        keep = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                "patch_size")
        return dict({k: clip[k] for k in keep}, model_type="siglip_vision_model", hidden_act="gelu_pytorch_tanh",
                    layer_norm_eps=1e-6)
    raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")
