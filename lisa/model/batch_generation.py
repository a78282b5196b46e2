"""Several prompts decoded together: one forward pass per step for the whole batch.

Prompts of different lengths are left-padded (explicit position ids, so every row sees the positions
it would see alone); a row that stops (end of sequence, its own token budget, its ``on_token``
asking to stop) leaves the batch: the eager path drops its KV-cache rows, so the others keep
decoding without it; the static-cache path (:mod:`.static_batch`, on CUDA) keeps fixed shapes and
ignores the row. Each row gets what :func:`generate` gives for the same prompt alone: its new ids and the
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
from .static_batch import static_rows


@dataclass
class BatchItem:
    input_ids: list[int]  # one prompt, image tokens included
    clip_feats: torch.Tensor  # [P, H] projected features of its image
    max_new_tokens: int
    pick: Callable[[torch.Tensor], int] | None = None  # None: greedy
    on_token: Callable[[int], bool | None] | None = None  # True ends this row early


def left_pad(rows: list[torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
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


@dataclass
class PaddedPrompts:
    """The prompts of a batch spliced with their images and left-padded."""

    ids: list[torch.Tensor]  # [1, T_i] each
    span_ends: list[torch.Tensor]
    embeds: torch.Tensor  # [B, L, H]
    mask: torch.Tensor  # [B, L] bool, False on padding
    positions: torch.Tensor  # [B, L]
    pads: list[int]


def pad_prompts(model, items: list[BatchItem]) -> PaddedPrompts:
    embed = model.llm.get_input_embeddings()
    device = embed.weight.device
    ids, rows, span_ends = [], [], []
    for item in items:
        row_ids = torch.tensor([item.input_ids], device=device)
        n_img = int((row_ids == IMAGE_TOKEN_INDEX).sum())
        spliced = splice_image_features(row_ids, embed, [item.clip_feats] * n_img)
        ids.append(row_ids)
        rows.append(spliced.inputs_embeds)
        span_ends.append(spliced.span_end)
    embeds, mask, positions, pads = left_pad(rows, device)
    return PaddedPrompts(ids, span_ends, embeds, mask, positions, pads)


class EagerRows:
    """The eager batch: a dynamic KV cache whose rows leave with their prompts."""

    def __init__(self, model, prompts: PaddedPrompts, items: list[BatchItem], use_layer_step: bool = True):
        self.model, self.prompts = model, prompts
        self.mask, self.cache = prompts.mask, DynamicCache(config=model.llm.config)
        self.next_pos = prompts.positions[:, -1:] + 1
        self.active = list(range(len(items)))  # item index of each cache row
        # the eager path's one-token step without the decoder's per-call overhead (same arithmetic)
        capacity = int(prompts.positions[:, -1].max()) + 1 + max(item.max_new_tokens for item in items)
        self.layer_step = layer_loop_step(model, capacity) if use_layer_step else None
        if self.layer_step is not None:
            self.layer_step.cache = self.cache

    def prefill(self) -> torch.Tensor:
        p = self.prompts
        out = run_decoder(self.model.decoder, self.cache, inputs_embeds=p.embeds, attention_mask=p.mask,
                          position_ids=p.positions)
        return out.last_hidden_state

    def step(self, next_ids: list[int], active: list[int]) -> torch.Tensor:
        """Decode ``next_ids`` (one per item) of the ``active`` items; their last hidden states."""
        if active != self.active:
            rows_kept = torch.tensor([self.active.index(b) for b in active], device=self.mask.device)
            self.cache.batch_select_indices(rows_kept)
            self.mask, self.next_pos = self.mask[rows_kept], self.next_pos[rows_kept]
            self.active = list(active)
        embed = self.model.llm.get_input_embeddings()
        step = embed(torch.tensor([[next_ids[b]] for b in active], device=self.mask.device))
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(active), 1))], 1)
        if self.layer_step is not None:
            last = self.layer_step(step, self.next_pos[:, 0], self.mask)
        else:
            out = run_decoder(self.model.decoder, self.cache, inputs_embeds=step, attention_mask=self.mask,
                              position_ids=self.next_pos)
            last = out.last_hidden_state[:, -1]
        self.next_pos = self.next_pos + 1
        return last


@torch.no_grad()
def generate_batch(model, items: list[BatchItem], eos_token_id: int | None = 2,
                   stop_ids: tuple[int, ...] = (), use_layer_step: bool = True, fast=None) -> list[Generated]:
    """``fast``: a :class:`~lisa.model.static_decode.FastDecoding` whose static batch decodes the
    items (eager when None, or when it cannot take them)."""
    if not items:
        return []
    seg_id = model.seg_token_id
    t0 = time.perf_counter()
    prompts = pad_prompts(model, items)
    rows = static_rows(fast, prompts, items) if fast is not None else None
    if rows is None:
        rows = EagerRows(model, prompts, items, use_layer_step)
    hidden = rows.prefill()
    seg_hidden: list[list[torch.Tensor]] = [[] for _ in items]
    if seg_id is not None:
        for b in range(len(items)):
            pos = seg_hidden_positions(prompts.ids[b], prompts.span_ends[b], seg_id)[0]
            if pos.numel():
                seg_hidden[b].append(hidden[b, pos + prompts.pads[b]])
    last = hidden[:, -1]
    prefill = time.perf_counter() - t0

    stops = set(stop_ids) | ({eos_token_id} if eos_token_id is not None else set())
    new_ids: list[list[int]] = [[] for _ in items]
    token_times: list[list[float]] = [[] for _ in items]
    active = list(range(len(items)))  # the items still decoding, in the order of ``last``'s rows
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
                seg_hidden[b].append(last[r:r + 1].clone())  # a graph replay overwrites ``last``
            stop_here = item.on_token is not None and bool(item.on_token(next_id))
            if not (stop_here or next_id in stops or len(new_ids[b]) >= item.max_new_tokens):
                keep.append(b)
        if not keep:
            break
        active = keep
        t_prev = time.perf_counter()
        last = rows.step([ids[-1] for ids in new_ids], active)

    results = []
    for b, item in enumerate(items):
        h = torch.cat(seg_hidden[b], 0) if seg_hidden[b] else hidden.new_zeros((0, hidden.shape[-1]))
        timings = {"prefill": prefill, "decode": sum(token_times[b])}
        results.append(Generated(list(item.input_ids), new_ids[b], h, timings, token_times[b]))
    return results
