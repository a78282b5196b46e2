"""The LLaVA-style map detector: model, matching, losses, decoding, checkpoints."""

from .config import MapDetectorConfig, preset_config
from .decode import MapPrediction, decode
from .detector import MapDetector, build_from_config, build_map_detector, parameter_summary
from .losses import LossWeights, SetCriterion
from .targets import MapTargets, make_targets

__all__ = ["MapDetector", "MapDetectorConfig", "MapPrediction", "MapTargets", "LossWeights", "SetCriterion",
           "build_from_config", "build_map_detector", "decode", "make_targets", "parameter_summary",
           "preset_config"]
