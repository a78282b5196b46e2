"""Greedy generation with a KV cache that collects the [SEG] hidden states on the way.

The original regenerates the whole sequence (and the CLIP features) for every new token, then takes
the hidden state of the token before each [SEG] from the last full pass. Here the hidden state that
produced the logits choosing [SEG] is exactly that state, so it is kept as the token is emitted.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ..constants import IMAGE_TOKEN_INDEX
from .layer_step import layer_loop_step
from .splice import seg_hidden_positions, splice_image_features


@dataclass
class Generated:
    prompt_ids: list[int]
    new_ids: list[int]
    seg_hidden: torch.Tensor  # [k, H] in order of appearance (prompt [SEG]s first)
    timings: dict[str, float] = field(default_factory=dict)
    token_times: list[float] = field(default_factory=list)


@functools.lru_cache(maxsize=None)
def _cache_argument(decoder_type: type) -> str:
    # transformers 5.x decoders take the KV cache as ``cache``; earlier 5.x releases call it
    # ``past_key_values``, which later ones still accept with a FutureWarning.
    params = inspect.signature(decoder_type.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def run_decoder(decoder, cache, **inputs):
    """One decoder call that reads and extends the KV ``cache`` (``inputs``: inputs_embeds,
    attention_mask, ...), under whichever name this transformers version takes it."""
    return decoder(**inputs, **{_cache_argument(type(decoder)): cache}, use_cache=True)


class ReservedLayer(DynamicLayer):
    """A KV-cache layer that writes into a buffer reserved for the whole generation (grown by
    doubling if it runs out) instead of concatenating a new tensor at every step: with a few hundred
    cached positions, the per-step copies were a tenth of a CPU decode step."""

    def __init__(self, capacity: int = 0):
        super().__init__()
        self.capacity = int(capacity)
        self._k = self._v = None
        self._n = 0

    def _reserve(self, need: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Room for ``need`` positions (new buffers shaped like the incoming states)."""
        cap = max(need, self.capacity)
        if self._k is not None:
            if cap <= self._k.shape[-2]:
                return
            cap = max(cap, 2 * self._k.shape[-2])
        k = key_states.new_empty((*key_states.shape[:-2], cap, key_states.shape[-1]))
        v = value_states.new_empty((*value_states.shape[:-2], cap, value_states.shape[-1]))
        if self._n:
            k[..., :self._n, :] = self._k[..., :self._n, :]
            v[..., :self._n, :] = self._v[..., :self._n, :]
        self._k, self._v = k, v

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, add = self._n, key_states.shape[-2]
        self._reserve(n + add, key_states, value_states)
        self._k[..., n:n + add, :] = key_states
        self._v[..., n:n + add, :] = value_states
        self._n = n + add
        self.keys, self.values = self._k[..., :self._n, :], self._v[..., :self._n, :]
        return self.keys, self.values


def reserved_cache(num_layers: int, capacity: int, prefix: DynamicCache | None = None) -> DynamicCache:
    """A cache of :class:`ReservedLayer` with room for ``capacity`` positions, holding a copy of
    ``prefix``'s keys and values when given."""
    cache = DynamicCache()
    cache.layers = [ReservedLayer(capacity) for _ in range(num_layers)]
    if prefix is not None:
        for layer, src in zip(cache.layers, prefix.layers):
            layer.update(src.keys, src.values)
    return cache


def use_decoding_layout(model) -> int:
    """Store the LLM's fp32 ``nn.Linear`` weights column-major when they live on the CPU; returns how
    many were changed. Shapes, values and state-dict keys stay the same (the saver writes contiguous
    copies). One-token decoding is matrix-vector products, and on x86 CPUs fp32 ``linear`` reads a
    column-major weight about 1.5-1.9x faster than a row-major one (measured on the medium preset:
    7.3 against 11.0 ms for all decode weights); multi-token products run at the same speed. bf16
    and fp16 are slower that way, so they, quantized layers and GPU weights are left alone."""
    changed = 0
    for module in model.llm.modules():
        if type(module) is not torch.nn.Linear:
            continue
        w = module.weight
        if w.device.type == "cpu" and w.dtype == torch.float32 and w.is_contiguous():
            w.data = w.data.t().contiguous().t()
            changed += 1
    return changed


@dataclass
class PrefixCache:
    """The KV cache of a prompt's opening tokens (system prompt, first-turn header and image), which
    every query on the same image shares: a follow-up query only prefills what comes after it."""

    ids: tuple[int, ...]
    cache: DynamicCache
    length: int  # spliced positions covered

    def matches(self, ids: list[int]) -> bool:
        return len(ids) > len(self.ids) and tuple(ids[: len(self.ids)]) == self.ids


def image_prefix_length(ids: list[int]) -> int:
    """Tokens up to and including the first image token (0 if there is none)."""
    return ids.index(IMAGE_TOKEN_INDEX) + 1 if IMAGE_TOKEN_INDEX in ids else 0


@torch.no_grad()
def build_prefix(model, prefix_ids: list[int], clip_feats: torch.Tensor) -> PrefixCache:
    device = model.llm.get_input_embeddings().weight.device
    ids = torch.tensor([prefix_ids], device=device)
    n_img = prefix_ids.count(IMAGE_TOKEN_INDEX)
    spliced = splice_image_features(ids, model.llm.get_input_embeddings(), [clip_feats] * n_img)
    cache = DynamicCache(config=model.llm.config)
    run_decoder(model.decoder, cache, inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask)
    return PrefixCache(tuple(prefix_ids), cache, spliced.inputs_embeds.shape[1])


def prompt_seg_hidden(ids: torch.Tensor, span_end: torch.Tensor, hidden: torch.Tensor,
                      seg_id: int | None) -> list[torch.Tensor]:
    """The prefilled hidden states behind the [SEG] ids of the prompt part ``ids`` [1, T] (whose
    spliced positions end at ``span_end``): a list holding one [k, H] tensor, or empty. A cached
    prefix never ends right before a [SEG] (it ends with the image token), so the part after it has
    them all."""
    if seg_id is None:
        return []
    pos = seg_hidden_positions(ids, span_end, seg_id)[0]
    return [hidden[0, pos]] if pos.numel() else []


def decode_tokens(model, last: torch.Tensor, step, *, max_new_tokens: int, stops: set[int], pick=None,
                  on_token=None, seg_hidden: list, copy_states: bool = False) -> tuple[list[int], list[float]]:
    """The token loop of both decode paths. Each next id is picked from the logits after ``last`` (the
    prompt's last hidden state, then each step's): greedy, or ``pick(logits)``. The hidden state behind
    every generated [SEG] joins ``seg_hidden``; ``on_token`` sees each id (True ends early); a stop id
    or the budget ends it too. ``step(next_id) -> (last, logits, greedy id or None)`` decodes the
    chosen token. ``copy_states``: keep copies (a CUDA graph's replay overwrites its outputs). Returns
    the new ids and each token's seconds (token k: the step of token k-1 and its LM head)."""
    seg_id = model.seg_token_id
    new_ids: list[int] = []
    token_times: list[float] = []
    t_prev = time.perf_counter()
    logits, greedy = model.lm_head(last), None
    while len(new_ids) < max_new_tokens:
        if pick is not None:
            next_id = pick(logits)
        else:
            next_id = int(logits.argmax(-1)) if greedy is None else greedy
        new_ids.append(next_id)
        if seg_id is not None and next_id == seg_id:
            seg_hidden.append(last.clone() if copy_states else last)
        now = time.perf_counter()
        token_times.append(now - t_prev)
        t_prev = now
        stop_here = on_token is not None and bool(on_token(next_id))
        if stop_here or next_id in stops or len(new_ids) >= max_new_tokens:
            break
        last, logits, greedy = step(next_id)
    return new_ids, token_times


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, clip_feats: torch.Tensor, max_new_tokens: int = 512,
             eos_token_id: int | None = 2, stop_ids: tuple[int, ...] = (),
             prefix: PrefixCache | None = None, pick: Callable[[torch.Tensor], int] | None = None,
             on_token: Callable[[int], bool | None] | None = None, use_layer_step: bool = True) -> Generated:
    """``input_ids`` [1, T] (with image tokens), ``clip_feats`` [P, H] (projected features of its image).

    With a matching ``prefix``, prefilling starts from a copy of its KV cache. ``pick`` turns the
    logits [1, V] into the next id (default: argmax, greedy); ``on_token`` sees every new id as it is
    chosen (streaming) and ends the generation early by returning True (a stop string, a client gone)."""
    if input_ids.shape[0] != 1:
        raise ValueError("generate() takes one prompt at a time")
    seg_id = model.seg_token_id
    device = model.llm.get_input_embeddings().weight.device
    input_ids = input_ids.to(device)
    t0 = time.perf_counter()
    start, past_len, reuse = 0, 0, None
    if prefix is not None and prefix.matches(input_ids[0].tolist()):
        start, past_len, reuse = len(prefix.ids), prefix.length, prefix.cache
    rest = input_ids[:, start:]
    n_img = int((rest == IMAGE_TOKEN_INDEX).sum())
    spliced = splice_image_features(rest, model.llm.get_input_embeddings(), [clip_feats] * n_img)
    capacity = past_len + spliced.inputs_embeds.shape[1] + max_new_tokens
    cache = reserved_cache(model.llm.config.num_hidden_layers, capacity, reuse)
    mask = torch.ones((1, past_len + spliced.inputs_embeds.shape[1]), dtype=torch.bool, device=device)
    out = run_decoder(model.decoder, cache, inputs_embeds=spliced.inputs_embeds, attention_mask=mask)
    hidden = out.last_hidden_state
    seg_hidden = prompt_seg_hidden(rest, spliced.span_end, hidden, seg_id)
    last = hidden[:, -1]
    length = past_len + hidden.shape[1]
    timings = {"prefill": time.perf_counter() - t0}
    embed = model.llm.get_input_embeddings()
    layer_step = layer_loop_step(model, capacity) if use_layer_step else None
    if layer_step is not None:
        layer_step.cache = cache

    def step(next_id: int):
        nonlocal length
        inputs = embed(torch.tensor([[next_id]], device=device))
        length += 1
        if layer_step is not None:  # the same arithmetic without the decoder's per-call overhead
            last = layer_step(inputs, length - 1)
        else:
            mask = torch.ones((1, length), dtype=torch.bool, device=device)
            last = run_decoder(model.decoder, cache, inputs_embeds=inputs, attention_mask=mask).last_hidden_state[:, -1]
        return last, model.lm_head(last), None

    stops = set(stop_ids) | ({eos_token_id} if eos_token_id is not None else set())
    new_ids, token_times = decode_tokens(model, last, step, max_new_tokens=max_new_tokens, stops=stops, pick=pick,
                                         on_token=on_token, seg_hidden=seg_hidden)
    timings["decode"] = sum(token_times)
    h = torch.cat(seg_hidden, 0) if seg_hidden else hidden.new_zeros((0, hidden.shape[-1]))
    return Generated(input_ids[0].tolist(), new_ids, h, timings, token_times)
