"""The LLaVA-style map detector: modules, matching, losses, decoding (building it from its sources and
its checkpoints: ``lisa.map.checkpoint``)."""

from .config import MapDetectorConfig, preset_config
from .decode import MapPrediction, decode
from .detector import MapDetector, parameter_summary
from .losses import LossWeights, SetCriterion
from .targets import MapTargets, make_targets

__all__ = ["LossWeights", "MapDetector", "MapDetectorConfig", "MapPrediction", "MapTargets", "SetCriterion", "decode",
           "make_targets", "parameter_summary", "preset_config"]
