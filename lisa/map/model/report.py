"""What the detector trains: per-tensor listing and the trainable share (``lisa map params``, and
the line every training run prints at start)."""

from __future__ import annotations

from torch import nn

from .detector import parameter_summary


def trainable_share_line(model: nn.Module) -> str:
    total, trainable = parameter_summary(model)
    share = 100.0 * trainable / max(total, 1)
    return f"trainable parameters: {trainable:,} of {total:,} ({share:.2f}%)"


def part_table(model: nn.Module) -> list[tuple[str, int, int]]:
    """(top-level part, parameters, trainable parameters) per direct child module."""
    rows = []
    for name, child in model.named_children():
        total, trainable = parameter_summary(child)
        rows.append((name, total, trainable))
    return rows


def trainable_tensors(model: nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    return [(n, tuple(p.shape), str(p.dtype).replace("torch.", "")) for n, p in model.named_parameters()
            if p.requires_grad]


def format_report(model: nn.Module) -> str:
    lines = ["trainable tensors:"]
    tensors = trainable_tensors(model)
    width = max((len(n) for n, _, _ in tensors), default=10)
    for name, shape, dtype in tensors:
        lines.append(f"  {name.ljust(width)}  {str(list(shape)):>16}  {dtype}")
    lines.append("")
    lines.append("per part:")
    for name, total, trainable in part_table(model):
        state = "frozen" if trainable == 0 else ("trained" if trainable == total else "partly trained")
        lines.append(f"  {name:<12} {total:>14,} parameters  {trainable:>14,} trainable  ({state})")
    lines.append("")
    lines.append(trainable_share_line(model))
    return "\n".join(lines)
