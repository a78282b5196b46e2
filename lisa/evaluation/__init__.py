"""gIoU / cIoU evaluation of LISA models (``lisa eval``, ``lisa train --eval_only``)."""

from .metrics import intersection_union, summarize
from .runner import evaluate, format_table

__all__ = ["evaluate", "format_table", "intersection_union", "summarize"]
