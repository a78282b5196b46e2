"""Collation for plain LLaVA fine-tuning (``--no_seg``): text supervision only.

``lisa.data.collate`` requires a tokenizer with ``[SEG]``; a plain LLaVA tokenizer has none, and
adding one would change the model's vocabulary. This builds the same ids and labels (the data
layer's ``mask_labels`` round walk) and truncates each conversation to what fits after splicing.
"""

from __future__ import annotations

import torch

from ..constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from ..data.collate import mask_labels
from ..data.problems import DataError
from ..data.templates import expand_image_token
from ..tokenization import tokenizer_image_token


def collate_text(batch: list[dict], tokenizer, conv_type: str = "llava_v1", use_mm_start_end: bool = True,
                 model_max_length: int = 512, num_image_tokens: int = 256, **_unused) -> dict:
    if not batch:
        raise DataError("collate got an empty batch")
    ids_all, labels_all, offset, items = [], [], [0], []
    for item in batch:
        if item["masks"].shape[0]:
            raise DataError(f"{item['image_path']}: a segmentation sample in --no_seg training "
                            "(use --dataset vqa with LLaVA-format data)")
        n = 0
        for conv in item["conversations"]:
            conv = expand_image_token(conv) if use_mm_start_end else conv
            ids = tokenizer_image_token(conv, tokenizer)
            labels = mask_labels(conv, ids, tokenizer, conv_type) or [IGNORE_INDEX] * len(ids)
            limit = model_max_length - (num_image_tokens - 1) * ids.count(IMAGE_TOKEN_INDEX)
            ids, labels = ids[:max(limit, 1)], labels[:max(limit, 1)]
            ids_all.append(ids)
            labels_all.append(labels)
            n += 1
        offset.append(offset[-1] + n)
        items.append(item)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n, t = len(ids_all), max(len(ids) for ids in ids_all)
    input_ids = torch.full((n, t), pad_id, dtype=torch.long)
    labels = torch.full((n, t), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((n, t), dtype=torch.bool)
    for k, (ids, lab) in enumerate(zip(ids_all, labels_all)):
        input_ids[k, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[k, :len(lab)] = torch.tensor(lab, dtype=torch.long)
        attention_mask[k, :len(ids)] = True
    return {
        "image_paths": [it["image_path"] for it in items],
        "images": torch.stack([it["images"] for it in items]),
        "images_clip": torch.stack([it["images_clip"] for it in items]),
        "input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
        "offset": torch.tensor(offset, dtype=torch.long),
        "masks_list": [it["masks"] for it in items], "label_list": [it["label"] for it in items],
        "resize_list": [tuple(it["resize"]) for it in items],
        "inference": bool(batch[0]["inference"]),
    }
