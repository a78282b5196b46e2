"""Several prompts decoded together: one forward pass per step for the whole batch.

Prompts of different lengths are left-padded (explicit position ids, so every row sees the positions
it would see alone); a row that stops (end of sequence, its own token budget, its ``on_token``
asking to stop) leaves the batch and its KV-cache rows are dropped, so the others keep decoding
without it. Each row gets what :func:`generate` gives for the same prompt alone: its new ids and the
hidden states behind its [SEG] tokens (prompt [SEG]s first). Greedy answers are the same ids as
one-at-a-time decoding; the hidden states differ from them only by float rounding (the padded
matrix products sum in another order).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ..constants import IMAGE_TOKEN_INDEX
from .generation import Generated, run_decoder
from .layer_step import layer_loop_step
from .splice import seg_hidden_positions, splice_image_features


@dataclass
class BatchItem:
    input_ids: list[int]  # one prompt, image tokens included
    clip_feats: torch.Tensor  # [P, H] projected features of its image
    max_new_tokens: int
    pick: Callable[[torch.Tensor], int] | None = None  # None: greedy
    on_token: Callable[[int], bool | None] | None = None  # True ends this row early


def _left_pad(rows: list[torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """[1, L_i, H] rows -> embeds [B, L, H], mask [B, L], position ids [B, L] and each row's padding."""
    longest = max(r.shape[1] for r in rows)
    hidden = rows[0].shape[-1]
    embeds = rows[0].new_zeros((len(rows), longest, hidden))
    mask = torch.zeros((len(rows), longest), dtype=torch.bool, device=device)
    positions = torch.zeros((len(rows), longest), dtype=torch.long, device=device)
    pads = []
    for b, row in enumerate(rows):
        n = row.shape[1]
        pad = longest - n
        embeds[b, pad:] = row[0]
        mask[b, pad:] = True
        positions[b, pad:] = torch.arange(n, device=device)
        pads.append(pad)
    return embeds, mask, positions, pads


@torch.no_grad()
def generate_batch(model, items: list[BatchItem], eos_token_id: int | None = 2,
                   stop_ids: tuple[int, ...] = (), use_layer_step: bool = True) -> list[Generated]:
    if not items:
        return []
    seg_id = model.seg_token_id
    embed = model.llm.get_input_embeddings()
    device = embed.weight.device
    t0 = time.perf_counter()
    ids, rows, span_ends = [], [], []
    for item in items:
        row_ids = torch.tensor([item.input_ids], device=device)
        n_img = int((row_ids == IMAGE_TOKEN_INDEX).sum())
        spliced = splice_image_features(row_ids, embed, [item.clip_feats] * n_img)
        ids.append(row_ids)
        rows.append(spliced.inputs_embeds)
        span_ends.append(spliced.span_end)
    embeds, mask, positions, pads = _left_pad(rows, device)
    cache = DynamicCache(config=model.llm.config)
    out = run_decoder(model.decoder, cache, inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
    hidden = out.last_hidden_state
    seg_hidden: list[list[torch.Tensor]] = [[] for _ in items]
    if seg_id is not None:
        for b in range(len(items)):
            pos = seg_hidden_positions(ids[b], span_ends[b], seg_id)[0]
            if pos.numel():
                seg_hidden[b].append(hidden[b, pos + pads[b]])
    last = hidden[:, -1]
    next_pos = positions[:, -1:] + 1
    prefill = time.perf_counter() - t0

    stops = set(stop_ids) | ({eos_token_id} if eos_token_id is not None else set())
    # the eager path's one-token step without the decoder's per-call overhead (same arithmetic)
    capacity = int(positions[:, -1].max()) + 1 + max(item.max_new_tokens for item in items)
    layer_step = layer_loop_step(model, capacity) if use_layer_step else None
    if layer_step is not None:
        layer_step.cache = cache
    new_ids: list[list[int]] = [[] for _ in items]
    token_times: list[list[float]] = [[] for _ in items]
    active = list(range(len(items)))  # item index of each cache row
    t_prev = time.perf_counter()
    while active:
        logits = model.lm_head(last)
        greedy = logits.argmax(-1).tolist()
        now = time.perf_counter()
        keep = []
        for r, b in enumerate(active):
            item = items[b]
            next_id = greedy[r] if item.pick is None else item.pick(logits[r:r + 1])
            new_ids[b].append(next_id)
            token_times[b].append(now - t_prev)
            if seg_id is not None and next_id == seg_id:
                seg_hidden[b].append(last[r:r + 1])
            stop_here = item.on_token is not None and bool(item.on_token(next_id))
            if not (stop_here or next_id in stops or len(new_ids[b]) >= item.max_new_tokens):
                keep.append(r)
        if not keep:
            break
        if len(keep) < len(active):
            rows_kept = torch.tensor(keep, device=device)
            cache.batch_select_indices(rows_kept)
            mask, next_pos = mask[rows_kept], next_pos[rows_kept]
            active = [active[r] for r in keep]
        t_prev = time.perf_counter()
        step = embed(torch.tensor([[new_ids[b][-1]] for b in active], device=device))
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], 1)
        if layer_step is not None:
            last = layer_step(step, next_pos[:, 0], mask)
        else:
            out = run_decoder(model.decoder, cache, inputs_embeds=step, attention_mask=mask, position_ids=next_pos)
            last = out.last_hidden_state[:, -1]
        next_pos = next_pos + 1

    results = []
    for b, item in enumerate(items):
        h = torch.cat(seg_hidden[b], 0) if seg_hidden[b] else hidden.new_zeros((0, hidden.shape[-1]))
        timings = {"prefill": prefill, "decode": sum(token_times[b])}
        results.append(Generated(list(item.input_ids), new_ids[b], h, timings, token_times[b]))
    return results
