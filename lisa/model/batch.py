"""``Batch``: what the data layer's ``collate`` returns and ``LisaForSegmentation.forward`` takes.

``model(**batch)`` passes the model inputs (``Batch.keys()``); the other fields describe the batch
(image paths, questions, conversation texts) for logs, checks and rendering. ``batch["name"]`` reads
any field.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import ClassVar

import torch


@dataclass
class Batch:
    images: torch.Tensor  # [B, 3, S, S] SAM input, one per image
    images_clip: torch.Tensor  # [B, 3, C, C] CLIP input
    input_ids: torch.Tensor  # [N, T] one row per conversation, image tokens as IMAGE_TOKEN_INDEX
    labels: torch.Tensor  # [N, T] the ids where supervised (assistant answers), IGNORE_INDEX elsewhere
    attention_mask: torch.Tensor  # [N, T] bool
    offset: torch.Tensor  # [B + 1]: rows offset[b]:offset[b + 1] are about image b
    masks_list: list[torch.Tensor]  # per image: [k, H, W] float target masks, one per [SEG] in order
    label_list: list[torch.Tensor]  # per image: [H, W], 255 where the image's ignore map says so
    resize_list: list[tuple[int, int]]  # per image: its size inside the SAM input
    inference: bool = False  # validation items (no text loss)
    image_paths: list[str] = field(default_factory=list)
    questions_list: list[list[str]] = field(default_factory=list)
    sampled_classes_list: list[list[str]] = field(default_factory=list)
    conversation_list: list[str] = field(default_factory=list)

    MODEL_INPUTS: ClassVar[tuple[str, ...]] = ("images", "images_clip", "input_ids", "labels", "attention_mask",
                                               "offset", "masks_list", "label_list", "resize_list", "inference")

    def keys(self) -> tuple[str, ...]:
        return self.MODEL_INPUTS

    def __getitem__(self, name: str):
        if name not in {f.name for f in fields(self)}:
            raise KeyError(name)
        return getattr(self, name)

    def to(self, device, dtype: torch.dtype | None = None) -> Batch:
        """Tensors (and lists of tensors) on ``device``; the images also in ``dtype`` when given."""
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                moved[f.name] = v.to(device)
            elif isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
                moved[f.name] = [x.to(device) for x in v]
        if dtype is not None:
            for name in ("images", "images_clip"):
                moved[name] = moved[name].to(dtype)
        return replace(self, **moved)
