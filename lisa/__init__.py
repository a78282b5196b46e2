"""lisa: reasoning segmentation with multimodal LLMs (LISA), compatible with the released checkpoints."""

__version__ = "0.1.0"

__all__ = ["LisaPipeline", "LisaForSegmentation", "__version__"]


def __getattr__(name):  # lazy: importing lisa must not import torch-heavy modules
    if name == "LisaPipeline":
        from .inference.pipeline import LisaPipeline
        return LisaPipeline
    if name == "LisaForSegmentation":
        from .model.lisa import LisaForSegmentation
        return LisaForSegmentation
    raise AttributeError(name)
