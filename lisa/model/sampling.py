"""Sampling the next token: temperature and nucleus (top-p), with a generator of its own.

A picker is a callable ``logits [1, V] or [V] -> id`` for the generation loops (their default,
without one, is greedy argmax). Each picker draws from its own seeded ``torch.Generator`` so one
request's draws do not depend on what else the process runs.
"""

from __future__ import annotations

import torch


class SamplePicker:
    def __init__(self, temperature: float, top_p: float | None = None, seed: int | None = None):
        if not temperature > 0:
            raise ValueError(f"sampling needs a temperature > 0, not {temperature}")
        self.temperature = float(temperature)
        self.top_p = top_p
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(int(seed))
        else:
            self.generator.seed()

    def __call__(self, logits: torch.Tensor) -> int:
        probs = torch.softmax(logits.detach().float().reshape(-1).cpu() / self.temperature, -1)
        if self.top_p is not None and self.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            # keep a token while the mass before it is still short of top_p (the first always stays)
            keep = (sorted_p.cumsum(0) - sorted_p) < self.top_p
            probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs, 1, generator=self.generator))
