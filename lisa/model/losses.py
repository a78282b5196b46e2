"""Mask losses exactly as the original: per-mask sigmoid BCE (pixel mean) and dice (eps 1e-3 equivalent)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss_sum(logits: torch.Tensor, targets: torch.Tensor, scale: float = 1000.0,
                  eps: float = 1e-6) -> torch.Tensor:
    """Sum over masks of ``1 - (2*sum(p*g) + eps) / (sum(p) + sum(g) + eps)`` with the original's scaling."""
    p = logits.sigmoid().flatten(1)
    g = targets.flatten(1).to(p.dtype)
    numerator = 2 * (p / scale * g).sum(-1)
    denominator = (p / scale).sum(-1) + (g / scale).sum(-1)
    return (1 - (numerator + eps) / (denominator + eps)).sum()


def bce_loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over masks of the pixel-mean sigmoid binary cross entropy."""
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return loss.flatten(1).mean(1).sum()
