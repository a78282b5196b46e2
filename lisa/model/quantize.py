"""4-/8-bit weights for the LLM through bitsandbytes, driven by a transformers ``BitsAndBytesConfig``.

Only the LLM's decoder Linear layers are quantized. Unlike the original (whose skip list kept only
SAM in full precision), ``lm_head``, the projector, the [SEG] head and SAM stay unquantized: those
small layers decide the [SEG] token and the mask prompt, and quantizing them produced blank masks.
"""

from __future__ import annotations

import torch
from torch import nn


def make_bnb_config(quantization, compute_dtype: torch.dtype = torch.float16):
    from transformers import BitsAndBytesConfig

    if isinstance(quantization, BitsAndBytesConfig):
        return quantization
    if quantization in ("4bit", 4, "load_in_4bit"):
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype,
                                  bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4",
                                  llm_int8_skip_modules=["lm_head"])
    if quantization in ("8bit", 8, "load_in_8bit"):
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["lm_head"])
    raise ValueError(f"unknown quantization {quantization!r}; use '4bit', '8bit' or a BitsAndBytesConfig")


def quantize_llm(model, quantization, device=None) -> None:
    import warnings

    warnings.filterwarnings("ignore", message=".*inputs will be cast from.*during quantization")
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        raise RuntimeError("4/8-bit loading needs bitsandbytes: pip install 'lisa[quant]'") from e
    cfg = make_bnb_config(quantization, model.llm.get_input_embeddings().weight.dtype)
    skip = set(cfg.llm_int8_skip_modules or []) | {"lm_head"}
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    decoder = model.llm.get_decoder()
    targets = [(name, mod) for name, mod in decoder.named_modules()
               if isinstance(mod, nn.Linear) and not any(s in name.split(".") for s in skip)]
    for name, lin in targets:
        parent = decoder.get_submodule(name.rsplit(".", 1)[0]) if "." in name else decoder
        child = name.rsplit(".", 1)[-1]
        weight = lin.weight.data.to(torch.float16 if lin.weight.dtype == torch.float32 else lin.weight.dtype)
        if cfg.load_in_4bit:
            q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                  compute_dtype=cfg.bnb_4bit_compute_dtype, quant_type=cfg.bnb_4bit_quant_type,
                                  compress_statistics=cfg.bnb_4bit_use_double_quant, device="meta")
            q.weight = bnb.nn.Params4bit(weight.cpu(), requires_grad=False, quant_type=cfg.bnb_4bit_quant_type,
                                         compress_statistics=cfg.bnb_4bit_use_double_quant)
        else:
            q = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                    has_fp16_weights=False, threshold=cfg.llm_int8_threshold, device="meta")
            q.weight = bnb.nn.Int8Params(weight.cpu(), requires_grad=False, has_fp16_weights=False)
        if lin.bias is not None:
            q.bias = nn.Parameter(lin.bias.data.clone(), requires_grad=False)
        setattr(parent, child, q.to(device))  # quantization happens on this move
        del lin
    model.to(device)
    model.quantization = "4bit" if cfg.load_in_4bit else "8bit"
