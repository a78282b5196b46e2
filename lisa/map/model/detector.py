"""``MapDetector``: camera images -> CLIP (frozen) -> camera-aware Q-Former -> Linear into the LLM width ->
LLM (frozen in stage 2) over [visual tokens, instruction, map queries] -> map decoder -> instances.

``lisa.map.checkpoint.build_map_detector(llm_path=..., freeze_llm=True, qformer_pretrained=...,
preset=...)`` builds it from its sources;
``model(images, text_ids)`` returns ``{"pred_logits": [B, 50, 4], "pred_points": [B, 50, 20, 2]}``
(points normalised to [0, 1] over the range; ``decode.py`` gives metres), and with
``return_loss=True, targets=[MapTargets, ...]`` also ``loss_total, loss_cls, loss_pts, loss_dir``.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import MapDetectorConfig
from .decoder import MapDecoder
from .losses import LossWeights, SetCriterion
from .qformer import CameraQFormer
from .text import encode_instruction

TRAINED_PARTS = ("qformer", "visual_proj", "map_queries", "decoder")
FROZEN_PARTS = ("vision", "llm")


def llm_backbone(llm: nn.Module) -> nn.Module:
    """The causal LM without its vocabulary head (the hidden states are all the detector needs)."""
    if hasattr(llm, "get_base_model"):  # a PEFT wrapper (stage 3 with LoRA)
        llm = llm.get_base_model()
    return getattr(llm, getattr(llm, "base_model_prefix", ""), llm)


class MapDetector(nn.Module):
    def __init__(self, config: MapDetectorConfig, vision: nn.Module, llm: nn.Module, tokenizer,
                 loss_weights: LossWeights | None = None):
        super().__init__()
        self.config = config
        self.vision = vision
        self.llm = llm
        self.tokenizer = tokenizer
        llm_width = llm.get_input_embeddings().weight.shape[1]
        vision_width = vision.config.hidden_size
        num_cams = len(config.cameras)
        self.qformer = CameraQFormer(config.qformer, config.num_query_tokens, num_cams, vision_width)
        self.visual_proj = nn.Linear(self.qformer.width, llm_width)
        self.map_queries = nn.Embedding(config.num_map_queries, llm_width)
        nn.init.normal_(self.map_queries.weight, std=0.02)
        self.decoder = MapDecoder(llm_width, llm_width, num_cams * config.num_query_tokens, config.num_map_queries,
                                  config.num_classes, config.num_points, config.decoder_dim, config.decoder_layers,
                                  config.decoder_heads, config.decoder_ffn, config.decoder_dropout)
        self.criterion = SetCriterion(config.num_classes, loss_weights)
        self.register_buffer("instruction_ids", torch.tensor(encode_instruction(tokenizer, config.instruction),
                                                             dtype=torch.long), persistent=False)

    # ---- pieces -------------------------------------------------------------------------------
    @property
    def num_cameras(self) -> int:
        return len(self.config.cameras)

    def freeze(self, llm: bool = True) -> None:
        """The vision tower is always frozen; the LLM in stage 2 (``llm=True``)."""
        self.vision.requires_grad_(False)
        self.llm.requires_grad_(not llm)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, V, 3, H, W]`` (CLIP-normalised) -> frozen CLIP patch features ``[B, V, P, C]``."""
        if images.dim() != 5 or images.shape[1] != self.num_cameras:
            raise ValueError(f"images must be [B, {self.num_cameras}, 3, H, W], got {tuple(images.shape)}")
        b, v = images.shape[:2]
        with torch.no_grad():
            feats = self.vision(images.flatten(0, 1))
        return feats.unflatten(0, (b, v))

    def visual_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, V, P, C]`` -> Q-Former tokens projected into the LLM width ``[B, V * Q, H]``."""
        return self.visual_proj(self.qformer(features.flatten(0, 1), self.num_cameras))

    def text_embeddings(self, text_ids: torch.Tensor | None, batch: int) -> torch.Tensor:
        ids = self.instruction_ids if text_ids is None else text_ids
        if ids.dim() == 1:
            ids = ids[None].expand(batch, -1)
        if ids.shape[0] != batch:
            raise ValueError(f"text_ids has {ids.shape[0]} rows for a batch of {batch}")
        return self.llm.get_input_embeddings()(ids.to(self.instruction_ids.device))

    def forward(self, images: torch.Tensor | None = None, text_ids: torch.Tensor | None = None,
                return_loss: bool = False, targets: list | None = None, text_mask: torch.Tensor | None = None,
                features: torch.Tensor | None = None) -> dict:
        """``images [B, V, 3, H, W]`` (or precomputed CLIP ``features [B, V, P, C]``), ``text_ids
        [B, T]`` or ``[T]`` (default: the config's instruction), ``text_mask [B, T]`` for padding."""
        if features is None:
            if images is None:
                raise ValueError("give images or features")
            features = self.encode_images(images)
        visual = self.visual_tokens(features)
        b = visual.shape[0]
        text = self.text_embeddings(text_ids, b)
        queries = self.map_queries.weight[None].expand(b, -1, -1)
        llm_dtype = self.llm.get_input_embeddings().weight.dtype
        inputs = torch.cat([visual.to(llm_dtype), text.to(llm_dtype), queries.to(llm_dtype)], dim=1)
        mask = torch.ones(inputs.shape[:2], dtype=torch.long, device=inputs.device)
        if text_mask is not None:
            mask[:, visual.shape[1]: visual.shape[1] + text.shape[1]] = text_mask.to(mask.dtype)
        hidden = llm_backbone(self.llm)(inputs_embeds=inputs, attention_mask=mask).last_hidden_state
        query_hidden = hidden[:, -self.config.num_map_queries:].float()
        layers = self.decoder(query_hidden, visual.float())
        out = dict(layers[-1])
        out["aux_outputs"] = layers[:-1]
        if return_loss:
            if targets is None:
                raise ValueError("return_loss=True needs targets (a MapTargets per sample)")
            if len(targets) != b:
                raise ValueError(f"{len(targets)} targets for a batch of {b}")
            out.update(self.criterion(layers, targets))
        return out


def parameter_summary(model: nn.Module) -> tuple[int, int]:
    """(total parameters, trainable parameters)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
