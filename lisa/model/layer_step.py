"""A one-token decoder step that calls the decoder layers directly (LLaMA-style stacks).

On a CPU a medium-size decode step is a few milliseconds of weight reads plus about one of Python:
the decoder's forward wraps its layers in argument handling, builds the attention mask and the
rotary cos/sin of the new position on every step. For one new token over a KV cache none of that
changes the result: the mask is "attend to everything" (no mask), and cos/sin of every position
can be computed once, elementwise, exactly as the decoder computes them. So the step here runs the
same layer modules with the same inputs and gives the same hidden states bit for bit (tested); it
applies only where that holds (LLaMA decoders with a static rotary table), else None is returned
and the caller steps through the decoder's forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

STATIC_ROPE = ("default", "linear", "llama3", "yarn")


def layer_loop_step(model, capacity: int) -> Callable[..., torch.Tensor] | None:
    """``step(embeds [B, 1, H], position, padding=None) -> last hidden states [B, H]`` writing into the
    cache given to the returned function's caller (``step.cache = cache`` first), or None where
    unsupported. ``position``: the new token's position (an int), or each row's ([B] long tensor) for
    a left-padded batch, whose ``padding`` [B, L] (bool, True = a real position, the new one included)
    masks the padding out as the decoder's own mask would."""
    decoder = model.decoder
    rope = getattr(decoder, "rotary_emb", None)
    if type(decoder).__name__ != "LlamaModel" or rope is None or getattr(rope, "rope_type", None) not in STATIC_ROPE:
        return None
    layers = list(decoder.layers[: decoder.config.num_hidden_layers])
    weight = model.llm.get_input_embeddings().weight
    with torch.no_grad():
        positions = torch.arange(capacity, device=weight.device)[None]
        cos, sin = rope(weight[:1, None], positions)  # [1, capacity, head_dim], in the hidden dtype

    def step(embeds: torch.Tensor, position, padding: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(position, int):
            table = (cos[:, position:position + 1], sin[:, position:position + 1])
        else:  # a row per position
            table = (cos[0, position][:, None], sin[0, position][:, None])
        # a one-token query attends to every cached position: the decoder builds no mask unless some
        # are padding, and then a [B, 1, 1, L] boolean one
        mask = None if padding is None or bool(padding.all()) else padding[:, None, None, :]
        hidden = embeds
        for layer in layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=table, cache=step.cache, use_cache=True)
        return decoder.norm(hidden)[:, -1]

    step.cache = None
    return step
