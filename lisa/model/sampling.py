"""Choosing the next token from the logits: greedy, or temperature / nucleus (top-p) sampling.

A picker is a callable ``logits [1, V] or [V] -> id``. Greedy is the default everywhere (answers are
reproducible); sampling draws from its own seeded ``torch.Generator`` so one request's draws do not
depend on what else the process runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Sampling:
    """``temperature`` 0 (or None) is greedy; ``top_p`` keeps the smallest set of tokens whose
    probabilities add up to at least ``top_p``; ``seed`` makes a sampled answer repeatable."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.temperature is not None and not 0.0 <= self.temperature <= 100.0:
            raise ValueError(f"temperature must be between 0 and 100, not {self.temperature}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")

    @property
    def greedy(self) -> bool:
        return not self.temperature

    def picker(self):
        """``None`` for greedy (the generation loop's own argmax), else a sampling callable."""
        return None if self.greedy else SamplePicker(self)


class SamplePicker:
    def __init__(self, sampling: Sampling):
        self.temperature = float(sampling.temperature)
        self.top_p = sampling.top_p
        self.generator = torch.Generator()
        if sampling.seed is not None:
            self.generator.manual_seed(int(sampling.seed))
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
