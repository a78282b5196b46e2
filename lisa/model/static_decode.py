"""Decoding through a preallocated static KV cache, its one-token step a CUDA graph on CUDA.

On a GPU the eager decode step is launch-bound: every layer issues its kernels from Python, so a
7B step took 25 ms where reading the weights takes 3-5. Here the KV cache is allocated once per
length bucket (transformers' ``StaticCache``: fixed shapes, fixed addresses), the prompt is
prefilled through it eagerly, and the one-token step (embedding, decoder, LM head, argmax) runs
under ``torch.compile(mode="reduce-overhead")``, which records it as a CUDA graph and replays it.

The [SEG] hidden states are collected as tokens are produced, as in :func:`generation.generate`,
and a follow-up on the same image copies the image prefix's KV cache into the static buffers
instead of prefilling it again.

Attention windows:
- ``"full"``: a step attends over the whole bucket with the positions not yet written masked out,
  so every step has the same shapes (what a CUDA graph needs). The sums run over more (masked)
  terms than the eager path's, so states agree to float rounding, not bit for bit.
- ``"valid"``: a step attends over the written positions only, exactly the eager path's
  arithmetic (same ids and the same [SEG] states, bit for bit, in fp32 on the CPU); shapes grow
  each step, so it is not graph-capturable. CPU tests run the whole static path this way.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable

import torch
from transformers import StaticCache
from transformers.cache_utils import StaticLayer, get_layer_types_and_kwargs

from ..constants import IMAGE_TOKEN_INDEX
from .generation import Generated, PrefixCache, decode_tokens, prompt_seg_hidden
from .splice import splice_image_features

log = logging.getLogger("lisa.model")

# Every decoder compiles the same method, so by default its compiles share one cache and one
# recompile limit (8) across buckets and models: a server with a few models would hit it. Where
# torch offers it, each decoder's compile gets a cache of its own.
_ISOLATED = {"isolate_recompiles": True} if "isolate_recompiles" in inspect.signature(torch.compile).parameters else {}

# KV-cache lengths with their own cache and graph; a query uses the smallest that holds it.
BUCKETS = (256, 512, 1024, 2048, 4096, 8192)
WINDOWS = ("full", "valid")


def fast_decode_unsupported(model) -> str | None:
    """Why the static-cache graph path cannot run for ``model`` (None when it can)."""
    device = model.llm.get_input_embeddings().weight.device
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device (the model is on {device.type})"
    if getattr(model, "quantization", None):
        return f"{model.quantization} layers are not graph-captured"
    return None


def make_fast_decoding(model, compile: bool = True, decode: str | None = None) -> "FastDecoding | None":
    """The decode path a pipeline uses. ``decode``: None (the CUDA-graph path where supported and
    ``compile`` is on, else eager), "eager" (None is returned), "static" (the static cache without
    a graph: runs anywhere, 'valid' window where the layers allow it) or "graph" (an error where
    unsupported)."""
    if decode is None:
        return FastDecoding.for_model(model, compile)
    if decode == "eager":
        return None
    if decode == "static":
        return FastDecoding(model)
    if decode == "graph":
        reason = fast_decode_unsupported(model)
        if reason:
            raise ValueError(f"decode='graph' is not available: {reason}")
        return FastDecoding(model, graph=True)
    raise ValueError(f"decode must be None, 'eager', 'static' or 'graph', not {decode!r}")


class _ValidWindowLayer(StaticLayer):
    """A static layer whose update returns only the written positions (see the module docstring)."""

    is_compileable = False

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        self.filled += key_states.shape[-2]
        return keys[:, :, :self.filled], values[:, :, :self.filled]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.filled + query_length, 0


def _plain_layers(model) -> bool:
    """Whether every decoder layer is full attention (no sliding window), which 'valid' needs."""
    layer_types, _ = get_layer_types_and_kwargs(model.llm.config.get_text_config(decoder=True))
    return all(t == "full_attention" for t in layer_types)


def kv_shape(config) -> tuple[int, int]:
    """Key/value heads and head width of a decoder config (grouped-query attention included)."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return kv_heads, head_dim


class StaticDecoder:
    """A KV cache of ``capacity`` positions for one sequence and the one-token step that writes it."""

    def __init__(self, model, capacity: int, *, window: str = "full", graph: bool = False,
                 backend: str = "inductor", rows: int = 1):
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, not {window!r}")
        if graph and window != "full":
            raise ValueError("a graph-captured step needs the 'full' attention window")
        self.model, self.capacity, self.window, self.graph, self.rows = model, int(capacity), window, graph, rows
        llm_config = model.llm.config.get_text_config(decoder=True)
        embed = model.llm.get_input_embeddings()
        self.cache = StaticCache(config=llm_config, max_cache_len=self.capacity)
        if window == "valid":
            if any(type(layer) is not StaticLayer for layer in self.cache.layers):
                raise ValueError("the 'valid' window supports full-attention layers only")
            for layer in self.cache.layers:
                layer.__class__ = _ValidWindowLayer
                layer.filled = 0
        kv_heads, head_dim = kv_shape(llm_config)
        self.cache.early_initialization(batch_size=rows, num_heads=kv_heads, head_dim=head_dim,
                                        dtype=embed.weight.dtype, device=embed.weight.device)
        self.length = 0  # positions written
        step = self._eager_step
        if rows > 1:  # a batch: each row's padding mask and next position (inputs of the step)
            self.row_mask = torch.zeros((rows, self.capacity), dtype=torch.bool, device=embed.weight.device)
            self.next_pos = torch.zeros((rows, 1), dtype=torch.long, device=embed.weight.device)
            step = self._eager_rows_step
        self._step = step
        if graph:
            mode = "reduce-overhead" if backend == "inductor" else None
            self._step = torch.compile(step, mode=mode, fullgraph=True, backend=backend, **_ISOLATED)

    # ---- cache state ----------------------------------------------------------------------------
    def reset(self, prefix: PrefixCache | None = None) -> int:
        """Forget the cached positions (the buffers are kept, stale entries stay masked) and copy
        ``prefix``'s keys and values in; returns the number of positions now held."""
        n = prefix.length if prefix is not None else 0
        if n > self.capacity:
            raise ValueError(f"a prefix of {n} positions does not fit a {self.capacity}-position cache")
        for i, layer in enumerate(self.cache.layers):
            if prefix is not None:
                src = prefix.cache.layers[i]
                layer.keys[:, :, :n].copy_(src.keys)
                layer.values[:, :, :n].copy_(src.values)
            layer.cumulative_length.fill_(n)
            if self.window == "valid":
                layer.filled = n
        self.length = n
        return n

    @torch.no_grad()
    def prefill(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Run ``inputs_embeds`` [1, n, H] through the decoder after the held positions (eagerly:
        prompt lengths vary); returns their hidden states [1, n, H]."""
        n = inputs_embeds.shape[1]
        if self.length + n > self.capacity:
            raise ValueError(f"{self.length + n} positions do not fit a {self.capacity}-position cache")
        out = self.model.decoder(inputs_embeds=inputs_embeds, cache=self.cache, use_cache=True)
        self.length += n
        return out.last_hidden_state

    def _eager_step(self, token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.model.decoder(inputs_embeds=self.model.llm.get_input_embeddings()(token),
                                    cache=self.cache, use_cache=True).last_hidden_state[:, -1]
        logits = self.model.lm_head(hidden)
        return hidden, logits, logits.argmax(-1)

    @torch.no_grad()
    def step(self, token_id: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Decode one token: its hidden state [1, H], the logits [1, V] that follow and their greedy
        choice. Under a CUDA graph the returned tensors are overwritten by the next step: use or
        clone them first."""
        if self.length >= self.capacity:
            raise ValueError(f"the {self.capacity}-position cache is full")
        device = self.cache.layers[0].keys.device
        token = torch.tensor([[token_id]], device=device)
        if self.graph:
            torch.compiler.cudagraph_mark_step_begin()
        hidden, logits, next_id = self._step(token)
        self.length += 1
        return hidden, logits, int(next_id)

    # ---- a batch of rows (rows > 1) ---------------------------------------------------------------
    def _row_mask(self, n: int) -> torch.Tensor:
        # the 'full' window's layers attend over the whole bucket, the 'valid' one's over n positions
        return self.row_mask if self.window == "full" else self.row_mask[:, :n]

    @torch.no_grad()
    def prefill_rows(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Left-padded prompts ``embeds`` [rows, n, H] (``mask`` [rows, n], False on padding; their
        ``positions`` [rows, n]) from an empty cache; returns their hidden states [rows, n, H]."""
        n = embeds.shape[1]
        if n > self.capacity:
            raise ValueError(f"{n} positions do not fit a {self.capacity}-position cache")
        self.reset()
        self.row_mask.zero_()
        self.row_mask[:, :n] = mask
        self.next_pos.copy_(positions[:, -1:] + 1)
        out = self.model.decoder(inputs_embeds=embeds, attention_mask=self._row_mask(n), position_ids=positions,
                                 cache=self.cache, use_cache=True)
        self.length = n
        return out.last_hidden_state

    def _eager_rows_step(self, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(inputs_embeds=self.model.llm.get_input_embeddings()(tokens), attention_mask=mask,
                                  position_ids=positions, cache=self.cache, use_cache=True).last_hidden_state[:, -1]

    @torch.no_grad()
    def step_rows(self, token_ids: list[int]) -> torch.Tensor:
        """Decode one token per row; their hidden states [rows, H] (overwritten by the next step
        under a CUDA graph)."""
        if self.length >= self.capacity:
            raise ValueError(f"the {self.capacity}-position cache is full")
        self.row_mask[:, self.length] = True
        tokens = torch.tensor(token_ids, device=self.next_pos.device)[:, None]
        if self.graph:
            torch.compiler.cudagraph_mark_step_begin()
        last = self._step(tokens, self._row_mask(self.length + 1), self.next_pos)
        self.length += 1
        self.next_pos += 1
        return last


class FastDecoding:
    """The static-cache decode path of one model: a :class:`StaticDecoder` per length bucket (made
    on first use), and :meth:`generate` with the same contract as :func:`generation.generate`."""

    def __init__(self, model, *, graph: bool = False, window: str | None = None, backend: str = "inductor",
                 buckets: tuple[int, ...] = BUCKETS):
        self.model, self.graph, self.backend = model, graph, backend
        self.window = window or ("full" if graph or not _plain_layers(model) else "valid")
        max_pos = int(getattr(model.llm.config, "max_position_embeddings", 0) or 0)
        self.buckets = tuple(b for b in sorted(buckets) if not max_pos or b <= max_pos)
        if max_pos and (not self.buckets or self.buckets[-1] < max_pos):
            self.buckets += (max_pos,)
        self.decoders: dict = {}  # bucket size (one sequence) or (rows, bucket size) -> StaticDecoder
        self.warmup_s: dict = {}  # the same keys -> seconds
        self.broken: str | None = None  # why compiling failed (then every query decodes eagerly)

    @classmethod
    def for_model(cls, model, enabled: bool = True) -> "FastDecoding | None":
        """The CUDA-graph path when ``enabled`` and supported, else None (the caller decodes eagerly)."""
        if not enabled:
            return None
        reason = fast_decode_unsupported(model)
        if reason:
            log.debug("static-cache CUDA-graph decoding off: %s", reason)
            return None
        return cls(model, graph=True)

    def bucket(self, positions: int) -> int | None:
        return next((b for b in self.buckets if b >= positions), None)

    def decoder(self, positions: int, rows: int = 1) -> StaticDecoder | None:
        """The bucket holding ``positions`` (for ``rows`` sequences), made (and on a graph path compiled
        and recorded, before any token of the query is produced) on first use; None when there is
        none or compiling failed."""
        size = self.bucket(positions)
        if size is None or self.broken:
            return None
        key = size if rows == 1 else (rows, size)
        if key not in self.decoders:
            dec = StaticDecoder(self.model, size, window=self.window, graph=self.graph, backend=self.backend,
                                rows=rows)
            if self.graph:
                t0 = time.perf_counter()
                try:
                    self._run_steps(dec)
                except Exception as e:  # noqa: BLE001 - whatever the compiler raises, eager decoding works
                    self.broken = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
                    log.warning("the %d-position decode graph failed to compile (%s); decoding eagerly from now "
                                "on (--no_compile skips compiling)", size, self.broken)
                    return None
                self.warmup_s[key] = time.perf_counter() - t0
                log.info("decode warm-up: the %d-position static cache%s and its step graph took %.1f s", size,
                         f" of {rows} rows" if rows > 1 else "", self.warmup_s[key])
            self.decoders[key] = dec
        return self.decoders[key]

    @torch.no_grad()
    def _run_steps(self, dec: StaticDecoder, steps: int = 3) -> None:
        """A short prefill and a few steps through ``dec`` (on CUDA: compiles and records the graph),
        leaving it empty."""
        embed = self.model.llm.get_input_embeddings()
        device = embed.weight.device
        if dec.rows > 1:
            n = 4
            positions = torch.arange(n, device=device).expand(dec.rows, n)
            dec.prefill_rows(embed(torch.ones((dec.rows, n), dtype=torch.long, device=device)),
                             torch.ones((dec.rows, n), dtype=torch.bool, device=device), positions)
            for _ in range(steps):
                dec.step_rows([1] * dec.rows)
        else:
            dec.reset()
            hidden = dec.prefill(embed(torch.ones((1, 4), dtype=torch.long, device=device)))
            token = int(self.model.lm_head(hidden[:, -1]).argmax(-1))
            for _ in range(steps):
                _, _, token = dec.step(token)
        dec.reset()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    @torch.no_grad()
    def warm_up(self, positions: int = 1024) -> float:
        """Build the bucket holding ``positions`` now (on CUDA: compile and record its graph), so the
        first query does not pay it; returns the seconds it took."""
        t0 = time.perf_counter()
        made = self.bucket(positions) not in self.decoders
        dec = self.decoder(positions)
        if dec is not None and made and not self.graph:
            self._run_steps(dec)  # nothing to record: exercises the cache once
        return time.perf_counter() - t0

    @torch.no_grad()
    def generate(self, model, input_ids: torch.Tensor, clip_feats: torch.Tensor, max_new_tokens: int = 512,
                 eos_token_id: int | None = 2, stop_ids: tuple[int, ...] = (),
                 prefix: PrefixCache | None = None, pick: Callable[[torch.Tensor], int] | None = None,
                 on_token: Callable[[int], bool | None] | None = None) -> Generated | None:
        """Like :func:`generation.generate` (``pick``: logits -> next id, default greedy; ``on_token``:
        sees each new id, True ends early); None when the query needs more positions than the largest
        bucket (the caller then decodes eagerly)."""
        if input_ids.shape[0] != 1:
            raise ValueError("generate() takes one prompt at a time")
        seg_id = model.seg_token_id
        embed = model.llm.get_input_embeddings()
        input_ids = input_ids.to(embed.weight.device)
        t0 = time.perf_counter()
        start, reuse = 0, None
        if prefix is not None and prefix.matches(input_ids[0].tolist()):
            start, reuse = len(prefix.ids), prefix
        rest = input_ids[:, start:]
        n_img = int((rest == IMAGE_TOKEN_INDEX).sum())
        spliced = splice_image_features(rest, embed, [clip_feats] * n_img)
        past_len = reuse.length if reuse is not None else 0
        dec = self.decoder(past_len + spliced.inputs_embeds.shape[1] + max_new_tokens)
        if dec is None:
            return None
        dec.reset(reuse)
        hidden = dec.prefill(spliced.inputs_embeds)
        seg_hidden = prompt_seg_hidden(rest, spliced.span_end, hidden, seg_id)
        last = hidden[:, -1]
        timings = {"prefill": time.perf_counter() - t0}
        stops = set(stop_ids) | ({eos_token_id} if eos_token_id is not None else set())
        new_ids, token_times = decode_tokens(model, last, dec.step, max_new_tokens=max_new_tokens, stops=stops,
                                             pick=pick, on_token=on_token, seg_hidden=seg_hidden,
                                             copy_states=True)  # a graph replay overwrites ``last``
        timings["decode"] = sum(token_times)
        h = torch.cat(seg_hidden, 0) if seg_hidden else hidden.new_zeros((0, hidden.shape[-1]))
        return Generated(input_ids[0].tolist(), new_ids, h, timings, token_times)
