"""The LISA model: causal LM + CLIP vision tower + projector + SAM + [SEG] head."""

from .config import LisaConfig
from .lisa import LisaForSegmentation

__all__ = ["LisaConfig", "LisaForSegmentation"]
