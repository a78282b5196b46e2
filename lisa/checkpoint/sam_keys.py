"""Official SAM checkpoint names (``sam_vit_h_4b8939.pth``, LISA's ``model.visual_model.*``) <-> transformers' SamModel.

The official ViT-B/L/H variants are told apart by tensor shapes; other sizes need a SamConfig JSON.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..model.sam import SAM_PRESETS, sam_config, sam_config_from_dict
from .errors import CheckpointError

# (official pattern, transformers replacement), applied in order.
_OFFICIAL_TO_HF = [
    (r"^image_encoder\.", "vision_encoder."),
    (r"^vision_encoder\.blocks\.", "vision_encoder.layers."),
    (r"^vision_encoder\.patch_embed\.proj\.", "vision_encoder.patch_embed.projection."),
    (r"^vision_encoder\.neck\.0\.", "vision_encoder.neck.conv1."),
    (r"^vision_encoder\.neck\.1\.", "vision_encoder.neck.layer_norm1."),
    (r"^vision_encoder\.neck\.2\.", "vision_encoder.neck.conv2."),
    (r"^vision_encoder\.neck\.3\.", "vision_encoder.neck.layer_norm2."),
    (r"^(vision_encoder\.layers\.\d+\.)norm(\d)\.", r"\1layer_norm\2."),
    (r"^prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$", "shared_image_embedding.positional_embedding"),
    (r"^prompt_encoder\.point_embeddings\.", "prompt_encoder.point_embed."),
    (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^(mask_decoder\.transformer\.layers\.\d+\.)norm(\d)\.", r"\1layer_norm\2."),
    (r"^mask_decoder\.transformer\.norm_final_attn\.", "mask_decoder.transformer.layer_norm_final_attn."),
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.0\.", r"\1.proj_in."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.1\.", r"\1.layers.0."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.2\.", r"\1.proj_out."),
]

_HF_TO_OFFICIAL = [
    (r"^vision_encoder\.layers\.", "image_encoder.blocks."),
    (r"^vision_encoder\.patch_embed\.projection\.", "image_encoder.patch_embed.proj."),
    (r"^vision_encoder\.neck\.conv1\.", "image_encoder.neck.0."),
    (r"^vision_encoder\.neck\.layer_norm1\.", "image_encoder.neck.1."),
    (r"^vision_encoder\.neck\.conv2\.", "image_encoder.neck.2."),
    (r"^vision_encoder\.neck\.layer_norm2\.", "image_encoder.neck.3."),
    (r"^vision_encoder\.", "image_encoder."),
    (r"^(image_encoder\.blocks\.\d+\.)layer_norm(\d)\.", r"\1norm\2."),
    (r"^shared_image_embedding\.positional_embedding$", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"^prompt_encoder\.point_embed\.", "prompt_encoder.point_embeddings."),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"^(mask_decoder\.transformer\.layers\.\d+\.)layer_norm(\d)\.", r"\1norm\2."),
    (r"^mask_decoder\.transformer\.layer_norm_final_attn\.", "mask_decoder.transformer.norm_final_attn."),
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.0\.", r"\1.layers.1."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.proj_in\.", r"\1.layers.0."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.proj_out\.", r"\1.layers.2."),
]
_O2H = [(re.compile(p), r) for p, r in _OFFICIAL_TO_HF]
_H2O = [(re.compile(p), r) for p, r in _HF_TO_OFFICIAL]
# the prompt encoder keeps its own tied copy of the positional matrix in transformers
_TIED_HF = "prompt_encoder.shared_embedding.positional_embedding"


def _apply(rules, key: str) -> str:
    for pattern, repl in rules:
        key = pattern.sub(repl, key)
    return key


def official_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {_apply(_O2H, k): v for k, v in state.items()}
    if "shared_image_embedding.positional_embedding" in out:
        out[_TIED_HF] = out["shared_image_embedding.positional_embedding"]
    return out


def hf_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {_apply(_H2O, k): v for k, v in state.items() if k != _TIED_HF}


def infer_sam_config_dict(state: dict[str, torch.Tensor], source: str = "SAM weights") -> dict:
    """Vision-encoder settings of an official-layout SAM state dict, from its tensor shapes."""
    try:
        patch = state["image_encoder.patch_embed.proj.weight"]
        pos = state["image_encoder.pos_embed"]
    except KeyError as e:
        raise CheckpointError(f"{source}: not a SAM checkpoint (missing {e.args[0]})") from None
    hidden, _, patch_size, _ = patch.shape
    depth = len({int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    grid = pos.shape[1]
    globals_, window = [], 14
    for i in range(depth):
        rel = state.get(f"image_encoder.blocks.{i}.attn.rel_pos_h")
        if rel is None:
            continue
        if rel.shape[0] == 2 * grid - 1:
            globals_.append(i)
        else:
            window = (rel.shape[0] + 1) // 2
    head_dim = state["image_encoder.blocks.0.attn.rel_pos_h"].shape[1] if depth else 64
    prompt_dim = state["image_encoder.neck.0.weight"].shape[0]
    decoder_mlp = state.get("mask_decoder.transformer.layers.0.mlp.lin1.weight")
    for name, preset in SAM_PRESETS.items():
        if (preset["hidden_size"], preset["num_hidden_layers"]) == (hidden, depth) and grid * patch_size == 1024 \
                and patch_size == 16 and prompt_dim == 256:
            return {"preset": name}
    return {
        "image_size": grid * patch_size, "patch_size": patch_size, "window_size": window,
        "hidden_size": hidden, "num_hidden_layers": depth, "num_attention_heads": hidden // head_dim,
        "global_attn_indexes": globals_, "prompt_dim": prompt_dim,
        "decoder_mlp_dim": decoder_mlp.shape[0] if decoder_mlp is not None else 2048,
    }


def sam_config_for(state: dict[str, torch.Tensor], config_file: str | Path | None = None, source: str = "SAM"):
    """A SamConfig: from an explicit JSON if given, else detected from the official-layout tensors."""
    if config_file is not None:
        path = Path(config_file)
        try:
            return sam_config_from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise CheckpointError(f"{path}: SAM config file not found") from None
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: not a valid SamConfig JSON ({e})") from e
    fields = infer_sam_config_dict(state, source)
    return sam_config(**fields)


def load_sam_checkpoint(path: str | Path, config_file: str | Path | None = None):
    """An official SAM ``.pth`` (or safetensors) -> (SamConfig, transformers state dict)."""
    from .files import load_torch_file

    path = Path(path)
    state = load_torch_file(path)
    if config_file is None and (path.parent / "sam_config.json").is_file():
        config_file = path.parent / "sam_config.json"
    return sam_config_for(state, config_file, str(path)), official_to_hf(state)
