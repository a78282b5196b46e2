"""The map detector's sources and checkpoints: building it (``build_map_detector``) from an LLM
folder, a CLIP folder and a BLIP-2 folder (or random parts), saving and loading trained detectors."""

from .build import build_from_config, build_map_detector
from .io import DetectorCheckpointError, load_detector, save_detector
from .sources import SourceError

__all__ = ["DetectorCheckpointError", "SourceError", "build_from_config", "build_map_detector", "load_detector",
           "save_detector"]
