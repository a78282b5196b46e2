"""transformers' own LLaVA layout (``LlavaForConditionalGeneration``, the "llava-hf" folders) <-> ours.

A llava-hf ``config.json`` nests the language model (``text_config``) and the vision tower
(``vision_config``) and names the image placeholder token (``image_token_index``); its projector is
always LLaVA-1.5's two-layer GELU MLP (``linear_1``, ``linear_2``). Tensor names come in two
spellings: the one transformers 5 writes (``language_model.model.*``, ``language_model.lm_head.*``,
``vision_tower.*``, ``multi_modal_projector.*``) and the in-memory one (``model.language_model.*``,
``lm_head.*``, ``model.vision_tower.*``, ``model.multi_modal_projector.*``); older folders spell
the tower ``vision_tower.vision_model.*``. All of them are read.
"""

from __future__ import annotations

from typing import Any

ARCHITECTURE = "LlavaForConditionalGeneration"
IMAGE_TOKEN = "<image>"

# (llava-hf prefix, our prefix), longest first
_PREFIXES = (
    ("model.language_model.", "llm.model."),
    ("language_model.model.", "llm.model."),
    ("language_model.lm_head.", "llm.lm_head."),
    ("lm_head.", "llm.lm_head."),
    ("model.vision_tower.vision_model.", "vision_tower.vision_tower."),
    ("vision_tower.vision_model.", "vision_tower.vision_tower."),
    ("model.vision_tower.", "vision_tower.vision_tower."),
    ("vision_tower.", "vision_tower.vision_tower."),
    ("model.multi_modal_projector.linear_1.", "mm_projector.0."),
    ("model.multi_modal_projector.linear_2.", "mm_projector.2."),
    ("multi_modal_projector.linear_1.", "mm_projector.0."),
    ("multi_modal_projector.linear_2.", "mm_projector.2."),
)


def is_llava_hf(data: dict) -> bool:
    """Whether a parsed ``config.json`` is transformers' nested LLaVA layout."""
    return isinstance(data, dict) and "text_config" in data and "vision_config" in data


def llava_hf_to_internal(state: dict) -> tuple[dict, list[str]]:
    """Our module names for llava-hf tensors; returns (state, keys that belong to no part of ours)."""
    out, ignored = {}, []
    for key, value in state.items():
        for theirs, ours in _PREFIXES:
            if key.startswith(theirs):
                out[ours + key[len(theirs):]] = value
                break
        else:
            ignored.append(key)
    return out, ignored


def internal_to_llava_hf(state: dict) -> dict:
    """transformers' in-memory names (``LlavaForConditionalGeneration.state_dict()``) for ours."""
    names = {"llm.model.": "model.language_model.", "llm.lm_head.": "lm_head.",
             "vision_tower.vision_tower.": "model.vision_tower.",
             "mm_projector.0.": "model.multi_modal_projector.linear_1.",
             "mm_projector.2.": "model.multi_modal_projector.linear_2."}
    out = {}
    for key, value in state.items():
        for ours, theirs in names.items():
            if key.startswith(ours):
                out[theirs + key[len(ours):]] = value
                break
        else:
            raise KeyError(f"{key}: no place for it in LlavaForConditionalGeneration")
    return out


def lisa_fields(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Keyword arguments of :class:`lisa.model.config.LisaConfig` for a llava-hf ``config.json``."""
    text = dict(data.get("text_config") or {})
    vision = dict(data.get("vision_config") or {})
    text.setdefault("model_type", "llama")
    vision.setdefault("model_type", "clip_vision_model")
    if "hidden_size" not in vision:
        raise ValueError(f"{source}: vision_config has no hidden_size")
    from transformers import AutoConfig

    # the text config as transformers completes it (a llava-hf file may keep only the non-default fields)
    llm = AutoConfig.for_model(text["model_type"], **{k: v for k, v in text.items() if k != "model_type"}).to_dict()
    llm = {k: v for k, v in llm.items() if k not in ("architectures", "_name_or_path", "transformers_version")}
    strategy = data.get("vision_feature_select_strategy", "default")
    layer = data.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise ValueError(f"{source}: vision_feature_layer {layer!r}: only one feature layer is supported")
    siglip = vision.get("model_type") in ("siglip_vision_model", "siglip")
    if strategy not in ("default", "full"):
        raise ValueError(f"{source}: vision_feature_select_strategy {strategy!r} is not 'default' or 'full'")
    return dict(llm=llm, vision={k: v for k, v in vision.items() if k != "transformers_version"},
                projector_type="mlp2x_gelu", mm_hidden_size=int(vision["hidden_size"]), select_layer=layer,
                # "default" drops CLIP's CLS token (our "patch"); SigLIP has none to drop
                select_feature="patch" if strategy == "default" or siglip else "cls_patch",
                mm_use_im_start_end=False, has_seg_head=False)
