"""A batch of prompts (what ``lisa serve`` decodes together) through a static KV cache, the step a
CUDA graph on CUDA, as a single sequence is decoded in :mod:`.static_decode`.

A batch is padded up to the next of :data:`ROW_COUNTS` rows (repeating its last prompt), so a few
graphs serve every batch size; the rows keep their shapes to the end, and a row whose answer ended
goes on decoding its last token, unread. Each (rows, bucket) pair holds its own cache, made on first
use: rows x positions x layers x 2 x the key/value width, e.g. 4.3 GB for 8 rows of 1,024 positions
of a 7B model in bf16. On a GPU a new one is made only while it takes at most a quarter of the free
memory; a batch that would need more decodes eagerly.
"""

from __future__ import annotations

import torch

from .static_decode import kv_shape

ROW_COUNTS = (2, 4, 8, 16, 32, 64)
# a new (rows, bucket) cache may take at most this share of the GPU memory free when it is made;
# a larger batch decodes eagerly instead (its cache grows with the answers and shrinks as rows end)
MAX_FREE_SHARE = 0.25


def cache_bytes(model, rows: int, positions: int) -> int:
    """Bytes of the keys and values of ``rows`` x ``positions`` in every layer."""
    config = model.llm.config.get_text_config(decoder=True)
    kv_heads, head_dim = kv_shape(config)
    itemsize = model.llm.get_input_embeddings().weight.element_size()
    return rows * positions * config.num_hidden_layers * 2 * kv_heads * head_dim * itemsize


class StaticRows:
    """One batch in a :class:`~lisa.model.static_decode.StaticDecoder` of ``dec.rows`` rows: the
    stepper :func:`~lisa.model.batch_generation.generate_batch` drives."""

    def __init__(self, dec, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, n_items: int):
        self.dec, self.n = dec, n_items
        self.embeds, self.mask, self.positions = embeds, mask, positions

    def prefill(self) -> torch.Tensor:
        return self.dec.prefill_rows(self.embeds, self.mask, self.positions)[: self.n]

    def step(self, next_ids: list[int], active: list[int]) -> torch.Tensor:
        """Decode every row's next token (the padding rows repeat the last item's); the hidden
        states of the ``active`` items, in their order."""
        last = self.dec.step_rows(next_ids + [next_ids[-1]] * (self.dec.rows - len(next_ids)))
        return last[torch.tensor(active, device=last.device)]


def rows_decoder(fast, rows: int, positions: int):
    """``fast``'s decoder of ``rows`` rows for ``positions``; None when no bucket holds them, compiling
    failed, or (on a GPU) a new cache would take more than :data:`MAX_FREE_SHARE` of the free memory."""
    size = fast.bucket(positions)
    if size is None:
        return None
    device = fast.model.llm.get_input_embeddings().weight.device
    if device.type == "cuda" and (rows, size) not in fast.decoders:
        free, _ = torch.cuda.mem_get_info(device)
        if cache_bytes(fast.model, rows, size) > MAX_FREE_SHARE * free:
            return None
    return fast.decoder(positions, rows=rows)


def row_counts(max_batch: int) -> list[int]:
    """The row counts that batches of 2 to ``max_batch`` prompts are padded to."""
    return sorted({next(r for r in ROW_COUNTS if r >= n) for n in range(2, min(max_batch, ROW_COUNTS[-1]) + 1)})


def static_rows(fast, prompts, items) -> StaticRows | None:
    """``prompts`` (a :class:`~lisa.model.batch_generation.PaddedPrompts`) padded to a row count and
    placed in ``fast``'s decoder for them; None when no row count or bucket holds the batch."""
    n, length = prompts.embeds.shape[:2]
    rows = next((r for r in ROW_COUNTS if r >= n), None)
    if rows is None:
        return None
    dec = rows_decoder(fast, rows, length + max(item.max_new_tokens for item in items))
    if dec is None:
        return None
    extra = rows - n

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, t[-1:].expand(extra, *t.shape[1:])], 0) if extra else t

    return StaticRows(dec, pad(prompts.embeds), pad(prompts.mask), pad(prompts.positions), n)
