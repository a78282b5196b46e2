"""Checkpoint I/O: released LISA / LLaVA folders, official SAM weights, and our own format."""

from .errors import CheckpointError

__all__ = ["CheckpointError", "load_pretrained", "save_pretrained"]


def __getattr__(name):
    if name == "load_pretrained":
        from .loader import load_pretrained
        return load_pretrained
    if name == "save_pretrained":
        from .saver import save_pretrained
        return save_pretrained
    raise AttributeError(name)
