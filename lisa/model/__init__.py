"""The LISA model: causal LM + CLIP vision tower + projector + SAM + [SEG] head.

The names below load on first use, so that importing a light module of this package (its config,
say) does not import transformers' model classes.
"""

__all__ = ["LisaConfig", "LisaForSegmentation"]


def __getattr__(name):
    if name == "LisaConfig":
        from .config import LisaConfig
        return LisaConfig
    if name == "LisaForSegmentation":
        from .lisa import LisaForSegmentation
        return LisaForSegmentation
    raise AttributeError(name)
