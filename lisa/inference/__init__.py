"""Inference: the pipeline (image + instruction -> answer and masks) and what runs around it.

``LisaPipeline`` and ``LisaResult`` are loaded on first use, so that light users of this package
(the HTTP front of ``lisa serve``, which only routes requests) do not import torch.
"""

__all__ = ["LisaPipeline", "LisaResult"]


def __getattr__(name):
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
