"""State-dict work of ``lisa export``: ZeRO consolidation, key normalisation and LoRA folding.

Two key layouts are understood:

- this project's training runs: the module names of ``LisaForSegmentation`` with peft's injected
  LoRA (``llm.model.layers.0.self_attn.q_proj.base_layer.weight``, ``...q_proj.lora_A.default.weight``);
- the original LISA training (DeepSpeed checkpoint or its ``zero_to_fp32`` output): the PEFT-wrapped
  ``LISAForCausalLM`` (``base_model.model.model.layers.0.self_attn.q_proj.weight`` and
  ``...q_proj.lora_A.default.weight``, peft 0.4 without ``base_layer``; newer peft with it).

Folding: ``W += (B @ A) * alpha / r`` in float32, then back to W's dtype; LoRA keys are dropped.
"""

from __future__ import annotations

import logging
import re

import torch

log = logging.getLogger("lisa.export")

ORIGINAL_PREFIX = "base_model.model."
LORA_A = re.compile(r"^(?P<module>.+)\.lora_A(?:\.(?P<adapter>[^.]+))?\.weight$")


def consolidate(ckpt_dir, tag: str) -> dict[str, torch.Tensor]:
    """fp32 state dict of a ZeRO-1/2/3 checkpoint through DeepSpeed's own API (all ranks' shards)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)


def detect_layout(state: dict) -> str:
    """"original" (PEFT-wrapped LISAForCausalLM names) or "internal" (our module names)."""
    keys = list(state)
    if any(k.startswith(ORIGINAL_PREFIX) for k in keys):
        return "original"
    if any(k.startswith(("llm.", "sam.", "mm_projector.")) for k in keys):
        return "internal"
    if any(k.startswith("model.") or k == "lm_head.weight" for k in keys):
        return "lisa"  # already merged, released layout
    raise ValueError("unrecognised state dict: expected keys like llm.model.*, base_model.model.model.* "
                     f"or model.*; first keys: {keys[:3]}")


def strip_module_prefix(state: dict) -> dict:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def fold_lora(state: dict[str, torch.Tensor], alpha: float | None, *, progress: bool = False) -> dict:
    """Merge every LoRA pair into its base weight. ``alpha`` None -> alpha = r (scaling 1) with a warning."""
    from tqdm.auto import tqdm

    out = dict(state)
    pairs = [(m.group("module"), m.group("adapter"), k) for k in state if (m := LORA_A.match(k))]
    adapters = {a for _, a, _ in pairs}
    if len(adapters) > 1:
        raise ValueError(f"several LoRA adapters in one checkpoint ({sorted(map(str, adapters))}); merge one")
    if pairs and alpha is None:
        log.warning("LoRA alpha unknown: using alpha = r (scaling 1); pass --lora_alpha")
    for module, adapter, key_a in tqdm(pairs, desc="Merging LoRA", disable=not progress or not pairs, unit="layer"):
        suffix = f".{adapter}" if adapter else ""
        key_b = f"{module}.lora_B{suffix}.weight"
        if key_b not in state:
            raise ValueError(f"{key_a} has no matching {key_b}")
        base_key = f"{module}.base_layer.weight" if f"{module}.base_layer.weight" in state else f"{module}.weight"
        if base_key not in state:
            raise ValueError(f"{key_a}: no base weight {module}.weight or {module}.base_layer.weight")
        a, b, w = state[key_a].float(), state[key_b].float(), state[base_key]
        r = a.shape[0]
        scaling = (alpha if alpha is not None else r) / r
        if tuple((b @ a).shape) != tuple(w.shape):
            raise ValueError(f"{module}: LoRA B@A has shape {tuple((b @ a).shape)}, the weight {tuple(w.shape)}")
        merged = (w.float() + (b @ a) * scaling).to(w.dtype)
        out.pop(key_a), out.pop(key_b), out.pop(base_key)
        out[f"{module}.weight"] = merged
        if f"{module}.base_layer.bias" in out:
            out[f"{module}.bias"] = out.pop(f"{module}.base_layer.bias")
    leftovers = [k for k in out if ".lora_" in k]
    if leftovers:
        raise ValueError(f"LoRA tensors this tool cannot merge: {leftovers[:3]}")
    # base_layer without LoRA (should not happen, but keep names canonical)
    for k in [k for k in out if ".base_layer." in k]:
        out[k.replace(".base_layer.", ".")] = out.pop(k)
    return out


def to_internal(state: dict[str, torch.Tensor], alpha: float | None, progress: bool = False) -> dict:
    """Any supported layout -> merged state in our module names."""
    from ..checkpoint.layout import lisa_to_internal

    state = strip_module_prefix(state)
    layout = detect_layout(state)
    if layout == "original":
        state = {k[len(ORIGINAL_PREFIX):] if k.startswith(ORIGINAL_PREFIX) else k: v for k, v in state.items()}
    state = fold_lora(state, alpha, progress=progress)
    if layout == "internal":
        return state
    internal, ignored = lisa_to_internal(state)
    if ignored:
        log.info("ignored %d keys (e.g. %s)", len(ignored), ignored[0])
    return internal
