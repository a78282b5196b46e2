"""Replace image placeholder tokens by image features, keeping explicit position bookkeeping.

Every ``IMAGE_TOKEN_INDEX`` in ``input_ids`` is replaced by the P feature vectors of its image. The
result records, for each original token position, the span it occupies in the spliced sequence, so
callers never rely on a constant offset (the original's "+255" only holds for one 256-patch image).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX


@dataclass
class Spliced:
    inputs_embeds: torch.Tensor  # [N, L, H]
    attention_mask: torch.Tensor  # [N, L] bool
    labels: torch.Tensor | None  # [N, L]
    span_end: torch.Tensor  # [N, T]: spliced index of the LAST position of each original token
    lengths: torch.Tensor  # [N]: spliced length of each row (padding included, before batch padding)


def splice_image_features(
    input_ids: torch.Tensor,
    embed_tokens: nn.Module,
    image_features: list[torch.Tensor],
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> Spliced:
    """``image_features`` holds one [P_i, H] tensor per image token, in row-major order of the tokens."""
    n_rows, t = input_ids.shape
    is_image = input_ids == IMAGE_TOKEN_INDEX
    n_tokens = int(is_image.sum())
    if n_tokens != len(image_features):
        raise ValueError(f"{n_tokens} image tokens in input_ids but {len(image_features)} images given")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
    text_embeds = embed_tokens(input_ids.clamp(min=0))
    device = text_embeds.device

    # extra[n, j] = (P - 1) for an image token at j, else 0; span_end from its cumulative sum
    extra = torch.zeros((n_rows, t), dtype=torch.long, device=device)
    sizes = torch.tensor([f.shape[0] for f in image_features], dtype=torch.long, device=device)
    extra[is_image.to(device)] = sizes - 1
    span_end = torch.arange(t, device=device).expand(n_rows, t) + extra.cumsum(1)
    lengths = t + extra.sum(1)
    max_len = int(lengths.max()) if n_rows else 0

    hidden = text_embeds.shape[-1]
    embeds = text_embeds.new_zeros((n_rows, max_len, hidden))
    mask = torch.zeros((n_rows, max_len), dtype=torch.bool, device=device)
    out_labels = None if labels is None else torch.full((n_rows, max_len), IGNORE_INDEX, dtype=labels.dtype,
                                                        device=device)
    feature_iter = iter(image_features)
    for n in range(n_rows):
        positions = is_image[n].nonzero().flatten().tolist()
        pieces, label_pieces, mask_pieces, start = [], [], [], 0
        for p in positions:
            feats = next(feature_iter).to(device=device, dtype=text_embeds.dtype)
            pieces += [text_embeds[n, start:p], feats]
            mask_pieces += [attention_mask[n, start:p].to(device),
                            attention_mask[n, p:p + 1].to(device).expand(feats.shape[0])]
            if labels is not None:
                label_pieces += [labels[n, start:p].to(device),
                                 torch.full((feats.shape[0],), IGNORE_INDEX, dtype=labels.dtype, device=device)]
            start = p + 1
        pieces.append(text_embeds[n, start:])
        mask_pieces.append(attention_mask[n, start:].to(device))
        if labels is not None:
            label_pieces.append(labels[n, start:].to(device))
        row = torch.cat(pieces, 0)
        length = row.shape[0]
        embeds[n, :length] = row
        mask[n, :length] = torch.cat(mask_pieces, 0).bool()
        if out_labels is not None:
            out_labels[n, :length] = torch.cat(label_pieces, 0)
    return Spliced(embeds, mask, out_labels, span_end, lengths)


def seg_hidden_positions(input_ids: torch.Tensor, span_end: torch.Tensor, seg_token_id: int) -> list[torch.Tensor]:
    """Per row, the spliced positions whose hidden state is the [SEG] embedding.

    As in the original, the embedding for a [SEG] at token j is the hidden state of token j-1 (the
    position whose output predicts [SEG]); here it is the last spliced position of token j-1.
    """
    is_seg = input_ids[:, 1:] == seg_token_id  # the token AFTER position j is [SEG]
    out = []
    for n in range(input_ids.shape[0]):
        idx = is_seg[n].nonzero().flatten()
        out.append(span_end[n, idx.to(span_end.device)])
    return out
