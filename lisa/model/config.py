"""Typed configuration of a LISA model and its mapping to/from the released ``config.json``.

A released LISA ``config.json`` is a flat LLaMA config (``model_type: "llava"``) plus LLaVA/LISA
fields. We keep the LLM part as the config dict of any transformers causal LM, and the vision tower
and SAM as their own transformers config dicts.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from ..constants import LLAVA_LLM_TYPES

# Fields the original LLaVA / LISA code adds to the LLaMA config. They are not LLM settings.
LISA_CONFIG_FIELDS = (
    "train_mask_decoder", "out_dim", "mm_use_im_start_end", "mm_vision_tower", "vision_tower",
    "use_mm_proj", "mm_vision_select_feature", "mm_vision_select_layer", "image_aspect_ratio",
    "image_grid_pinpoints", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter", "pretrain_mm_mlp_adapter",
    "mm_use_im_patch_token", "mm_hidden_size", "mm_projector_type", "mm_patch_merge_type",
    "mm_projector_lr", "mm_vision_tower_lr", "unfreeze_mm_vision_tower", "max_sequence_length",
    "lisa", "tokenizer_model_max_length", "tokenizer_padding_side",
)

FORMAT_VERSION = 1
# sizes read from config.json that must be positive integers (checked here so that a bad value is one
# message naming the file, not an error from deep inside transformers)
POSITIVE_INT_FIELDS = ("hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads", "num_key_value_heads",
                       "intermediate_size", "max_position_embeddings", "mm_hidden_size", "out_dim")


@dataclass
class LisaConfig:
    llm: dict[str, Any]  # transformers config dict of the causal LM (with "model_type")
    vision: dict[str, Any] | None = None  # CLIPVisionConfig dict; None until resolved
    sam: dict[str, Any] | None = None  # SamConfig dict; None for a plain LLaVA model
    vision_tower: str | None = None  # where CLIP comes from (hub name, path, or relative folder)
    projector_type: str = "linear"  # "linear" (LLaVA v1 / LISA) or "mlp2x_gelu" (LLaVA-1.5)
    mm_hidden_size: int = 1024
    select_layer: int = -2
    select_feature: str = "patch"  # "patch" drops CLS, "cls_patch" keeps it
    out_dim: int = 256
    mm_use_im_start_end: bool = True
    seg_token: str = "[SEG]"
    has_seg_head: bool = True  # False for plain LLaVA models (no SAM, no text_hidden_fcs)
    ce_loss_weight: float = 1.0
    dice_loss_weight: float = 0.5
    bce_loss_weight: float = 2.0
    extra: dict[str, Any] = field(default_factory=dict)  # unknown LISA/LLaVA fields, kept verbatim
    conv_type: str | None = None  # the prompt template the model was trained with, when known

    @property
    def hidden_size(self) -> int:
        return int(self.llm["hidden_size"])

    @property
    def sam_image_size(self) -> int:
        return int((self.sam or {}).get("vision_config", {}).get("image_size", 1024))

    @property
    def clip_image_size(self) -> int:
        return int((self.vision or {}).get("image_size", 224))

    @property
    def image_aspect_ratio(self) -> str:
        """LLaVA's ``image_aspect_ratio``: "pad" (square-pad before the processor) or anything else
        (the processor's own resize and centre crop; LISA's "square")."""
        return str(self.extra.get("image_aspect_ratio") or "square")

    @property
    def vision_input(self):
        """How images are prepared for this model's vision tower (:class:`lisa.preprocess.VisionInput`)."""
        from .vision import vision_input

        return vision_input(self.vision, self.image_aspect_ratio)

    @property
    def num_image_tokens(self) -> int:
        v = self.vision or {}
        n = (int(v.get("image_size", 224)) // int(v.get("patch_size", 14))) ** 2
        # a SigLIP tower has no CLS token to keep or drop
        return n + (1 if self.select_feature == "cls_patch" and v.get("model_type") != "siglip_vision_model" else 0)

    def copy(self) -> "LisaConfig":
        return copy.deepcopy(self)

    # ---- the released config.json -------------------------------------------------------------
    def to_lisa_json(self, vision_tower_ref: str | None = None) -> dict[str, Any]:
        """The flat ``config.json`` of the released layout, plus a ``lisa`` block with what the
        original cannot express (projector type, CLIP/SAM configs, format version)."""
        out = dict(self.llm)
        model_type = out.get("model_type", "llama")
        if model_type == "llama":
            out["model_type"] = "llava"
            out["architectures"] = ["LISAForCausalLM" if self.has_seg_head else "LlavaLlamaForCausalLM"]
        tower = vision_tower_ref or self.vision_tower or "openai/clip-vit-large-patch14"
        out.update(self.extra)
        out.update({
            "mm_use_im_start_end": self.mm_use_im_start_end,
            "mm_vision_tower": tower,
            "vision_tower": tower,
            "use_mm_proj": True,
            "mm_hidden_size": self.mm_hidden_size,
            "mm_vision_select_layer": self.select_layer,
            "mm_vision_select_feature": self.select_feature,
            "mm_projector_type": "linear" if self.projector_type == "linear" else self.projector_type,
            "use_cache": False if self.has_seg_head else out.get("use_cache", True),
        })
        if self.has_seg_head:
            out["train_mask_decoder"] = True
            out["out_dim"] = self.out_dim
        out["lisa"] = {
            "format_version": FORMAT_VERSION,
            "llm_model_type": model_type,
            "projector_type": self.projector_type,
            "vision": self.vision,
            "seg_token": self.seg_token,
            "has_seg_head": self.has_seg_head,
            "conv_type": self.conv_type,
            "loss_weights": {"ce": self.ce_loss_weight, "dice": self.dice_loss_weight,
                             "bce": self.bce_loss_weight},
        }
        return out

    @classmethod
    def from_lisa_json(cls, data: dict[str, Any], source: str = "config.json") -> "LisaConfig":
        """Read a released LISA / LLaVA v1 / LLaVA-1.5 ``config.json`` (or one we wrote)."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object")
        data = dict(data)
        ours = data.pop("lisa", None) or {}
        for key in ("hidden_size", "num_hidden_layers", "vocab_size"):
            if key not in data:
                raise ValueError(f"{source}: missing field {key!r}; is this a LISA/LLaVA config.json?")
        for key in POSITIVE_INT_FIELDS:
            value = data.get(key, 1)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{source}: field {key!r} must be a positive integer, not {value!r}")
        llm_type = ours.get("llm_model_type") or data.get("model_type", "llama")
        llm_type = LLAVA_LLM_TYPES.get(llm_type, llm_type)
        extra = {k: data.pop(k) for k in list(data) if k in LISA_CONFIG_FIELDS}
        llm = {k: v for k, v in data.items() if k not in ("architectures", "_name_or_path")}
        llm["model_type"] = llm_type
        is_lisa = bool(extra.get("train_mask_decoder")) or bool(ours.get("has_seg_head"))
        projector = ours.get("projector_type") or extra.get("mm_projector_type") or "linear"
        cfg = cls(
            llm=llm,
            vision=ours.get("vision"),
            sam=None,
            vision_tower=extra.get("vision_tower") or extra.get("mm_vision_tower"),
            projector_type=projector,
            mm_hidden_size=int(extra.get("mm_hidden_size", 1024)),
            select_layer=int(extra.get("mm_vision_select_layer", -2)),
            select_feature=str(extra.get("mm_vision_select_feature", "patch")),
            out_dim=int(extra.get("out_dim", 256)),
            mm_use_im_start_end=bool(extra.get("mm_use_im_start_end", True)),
            seg_token=ours.get("seg_token", "[SEG]"),
            has_seg_head=is_lisa,
        )
        weights = ours.get("loss_weights") or {}
        cfg.ce_loss_weight = float(weights.get("ce", 1.0))
        cfg.dice_loss_weight = float(weights.get("dice", 0.5))
        cfg.bce_loss_weight = float(weights.get("bce", 2.0))
        keep = {k: v for k, v in extra.items() if k not in (
            "train_mask_decoder", "out_dim", "mm_use_im_start_end", "mm_vision_tower", "vision_tower",
            "use_mm_proj", "mm_hidden_size", "mm_vision_select_layer", "mm_vision_select_feature",
            "mm_projector_type")}
        cfg.extra = keep
        cfg.conv_type = ours.get("conv_type")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
