"""SAM through transformers' ``SamModel``: named presets and the text-embedding prompt LISA uses.

LISA prompts SAM with one sparse token per ``[SEG]`` (the projected hidden state) and the
``no_mask`` dense embedding, with ``multimask_output=False``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import SamConfig, SamModel

from .sam_attention import use_banded_attention
from .sam_upscaling import use_contiguous_upscaling

# ViT image encoders of the official checkpoints (sam_vit_{b,l,h}_*.pth).
SAM_PRESETS: dict[str, dict[str, Any]] = {
    "vit_b": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
              "global_attn_indexes": [2, 5, 8, 11]},
    "vit_l": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
              "global_attn_indexes": [5, 11, 17, 23]},
    "vit_h": {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16,
              "global_attn_indexes": [7, 15, 23, 31]},
}


def sam_config(preset: str | None = None, *, image_size: int = 1024, patch_size: int = 16,
               window_size: int = 14, prompt_dim: int = 256, decoder_mlp_dim: int = 2048,
               decoder_heads: int = 8, decoder_depth: int = 2, **vision: Any) -> SamConfig:
    """A ``SamConfig`` from a preset name and/or explicit vision-encoder fields."""
    if preset and preset not in SAM_PRESETS:
        raise ValueError(f"unknown SAM preset {preset!r}; choose one of {sorted(SAM_PRESETS)}")
    fields = dict(SAM_PRESETS[preset]) if preset else {}
    fields.update(vision)
    fields.setdefault("hidden_size", 768)
    fields.setdefault("num_hidden_layers", 12)
    fields.setdefault("num_attention_heads", 12)
    fields.setdefault("global_attn_indexes", [2, 5, 8, 11])
    embed = image_size // patch_size
    fields.setdefault("num_pos_feats", prompt_dim // 2)
    vision_config = dict(image_size=image_size, patch_size=patch_size, window_size=window_size,
                         output_channels=prompt_dim, mlp_dim=int(fields["hidden_size"] * 4), **fields)
    return SamConfig(
        vision_config=vision_config,
        prompt_encoder_config=dict(hidden_size=prompt_dim, image_size=image_size, patch_size=patch_size,
                                   image_embedding_size=embed),
        mask_decoder_config=dict(hidden_size=prompt_dim, mlp_dim=decoder_mlp_dim,
                                 num_attention_heads=decoder_heads, num_hidden_layers=decoder_depth,
                                 iou_head_hidden_dim=prompt_dim),
    )


def sam_config_from_dict(data: dict[str, Any]) -> SamConfig:
    return SamConfig(**{k: v for k, v in data.items() if k != "model_type"}) \
        if "vision_config" in data else sam_config(**data)


def build_sam(config: SamConfig | dict[str, Any]) -> SamModel:
    if isinstance(config, dict):
        config = sam_config_from_dict(config)
    sam = SamModel(config)
    use_banded_attention(sam)
    use_contiguous_upscaling(sam)
    return sam


def register_zero3_external_parameters(sam: SamModel) -> None:
    """transformers' mask decoder reads its ``iou_token`` / ``mask_tokens`` weights directly in its own
    forward, not through those embeddings' forward: tell ZeRO-3 to gather them with the decoder."""
    from deepspeed.runtime.zero.partition_parameters import register_external_parameter

    dec = sam.mask_decoder
    for param in (dec.iou_token.weight, dec.mask_tokens.weight):
        register_external_parameter(dec, param)


class SamPrompter:
    """Image encoding and text-prompted mask decoding on a ``SamModel``."""

    def __init__(self, sam: SamModel):
        self.sam = sam
        self._pe: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] normalised pixels -> image embeddings [B, C, h, w]. The encoder runs without
        autograd (it is frozen in LISA) unless some of its parameters are being trained."""
        encoder = self.sam.vision_encoder
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in encoder.parameters())
        with torch.set_grad_enabled(grad):
            return encoder(pixels).last_hidden_state

    def image_pe(self) -> torch.Tensor:
        p = self.sam.shared_image_embedding.positional_embedding
        key = (p.device, p.dtype)
        if self.sam.training or key not in self._pe:  # parameters may change while training
            self._pe.clear()
            self._pe[key] = self.sam.get_image_wide_positional_embeddings()
        return self._pe[key]

    def decode(self, image_embedding: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """One image's embedding [1, C, h, w] and k prompt vectors [k, C] -> mask logits [k, 1, s, s]."""
        k = text_embeds.shape[0]
        if k == 0:
            s = image_embedding.shape[-1] * 4
            return image_embedding.new_zeros((0, 1, s, s))
        return self._decode(image_embedding, text_embeds[None, :, None, :])

    def decode_many(self, image_embeddings: torch.Tensor, text_embeds: torch.Tensor,
                    image_index: torch.Tensor) -> torch.Tensor:
        """Embeddings of several images [B, C, h, w] and k prompt vectors [k, C], prompt j for image
        ``image_index[j]`` -> mask logits [k, 1, s, s], in one mask-decoder call (the decoder runs once
        per prompt either way; one call saves its per-call overhead, a third of its time on a CPU for
        small models). Prompts of a single image take the same path as :meth:`decode`."""
        index = torch.as_tensor(image_index, dtype=torch.long, device=image_embeddings.device)
        if text_embeds.shape[0] != index.numel():
            raise ValueError(f"{text_embeds.shape[0]} prompts but {index.numel()} image indices")
        if index.numel() == 0 or bool((index == index[0]).all()):
            first = int(index[0]) if index.numel() else 0
            return self.decode(image_embeddings[first:first + 1], text_embeds)
        return self._decode(image_embeddings.index_select(0, index), text_embeds[:, None, None, :])

    def _decode(self, image_embeddings: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] image embeddings and [B, P, 1, C] prompts -> mask logits [B * P, 1, s, s]."""
        dtype = self.sam.mask_decoder.iou_token.weight.dtype
        enc = self.sam.prompt_encoder
        n, _, h, w = image_embeddings.shape
        # through the module (not .weight) so that ZeRO-3 gathers the partitioned parameter
        no_mask = enc.no_mask_embed(torch.zeros(1, dtype=torch.long, device=image_embeddings.device))
        dense = no_mask.reshape(1, -1, 1, 1).expand(n, -1, h, w)
        masks, _ = self.sam.mask_decoder(
            image_embeddings=image_embeddings.to(dtype),
            image_positional_embeddings=self.image_pe().to(dtype),
            sparse_prompt_embeddings=sparse.to(dtype),
            dense_prompt_embeddings=dense.to(dtype),
            multimask_output=False,
        )
        return masks.reshape(-1, 1, masks.shape[-2], masks.shape[-1])
