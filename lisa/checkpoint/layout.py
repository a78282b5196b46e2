"""Key names of the released LISA layout <-> our module names, and CLIP settings read from tensors."""

from __future__ import annotations

import re

import torch

from .sam_keys import hf_to_official, official_to_hf

P_SAM = "model.visual_model."
P_PROJ = "model.mm_projector."
P_HEAD = "model.text_hidden_fcs."
P_CLIP = "model.vision_tower.vision_tower."
P_CLIP_ANY = "model.vision_tower."
# persistent in transformers 4.31 LLaMA checkpoints, computed at run time today
IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


def lisa_to_internal(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Split a LISA-layout state dict into our module names; returns (state, ignored keys)."""
    out: dict[str, torch.Tensor] = {}
    sam: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for k, v in state.items():
        if IGNORED.search(k):
            ignored.append(k)
        elif k.startswith(P_SAM):
            sam[k[len(P_SAM):]] = v
        elif k.startswith(P_PROJ):
            out["mm_projector." + k[len(P_PROJ):]] = v
        elif k.startswith(P_HEAD):
            out["text_hidden_fcs." + k[len(P_HEAD):]] = v
        elif k.startswith(P_CLIP):
            rest = k[len(P_CLIP):]
            # transformers 4.x CLIPVisionModel keys carry "vision_model."; 5.x modules do not
            rest = rest[len("vision_model."):] if rest.startswith("vision_model.") else rest
            out["vision_tower.vision_tower." + rest] = v
        elif k.startswith(P_CLIP_ANY):
            ignored.append(k)
        else:
            out["llm." + k] = v
    out.update({"sam." + k: v for k, v in official_to_hf(sam).items()})
    return out, ignored


def internal_to_lisa(state: dict[str, torch.Tensor], include_vision: bool = True) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    sam: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.startswith("llm."):
            out[k[4:]] = v
        elif k.startswith("sam."):
            sam[k[4:]] = v
        elif k.startswith("mm_projector."):
            out[P_PROJ + k[len("mm_projector."):]] = v
        elif k.startswith("text_hidden_fcs."):
            out[P_HEAD + k[len("text_hidden_fcs."):]] = v
        elif k.startswith("vision_tower.vision_tower."):
            if include_vision:
                out[P_CLIP + "vision_model." + k[len("vision_tower.vision_tower."):]] = v
        else:
            raise KeyError(f"unexpected module key {k!r}")
    out.update({P_SAM + k: v for k, v in hf_to_official(sam).items()})
    return out


def clip_config_from_tensors(state: dict[str, torch.Tensor]) -> dict | None:
    """CLIPVisionConfig fields from ``vision_tower.vision_tower.vision_model.*`` tensors, if present."""
    pre = "vision_tower.vision_tower."
    patch = state.get(pre + "embeddings.patch_embedding.weight")
    pos = state.get(pre + "embeddings.position_embedding.weight")
    if patch is None or pos is None:
        return None
    hidden, _, p, _ = patch.shape
    grid = int(round((pos.shape[0] - 1) ** 0.5))
    layers = len({m.group(1) for k in state if (m := re.match(re.escape(pre) + r"encoder\.layers\.(\d+)\.", k))})
    inter = state[pre + "encoder.layers.0.mlp.fc1.weight"].shape[0]
    return {"hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
            "num_attention_heads": max(1, hidden // 64), "image_size": grid * p, "patch_size": p,
            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 768}
