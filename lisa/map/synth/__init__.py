"""A synthetic nuScenes tree for tests and the demo: a town map, drives through it, rendered images.

Public API:

- ``write_synthetic_tree(SynthOptions(out, scenes=N, ...)) -> {"train": [...], "val": [...]}``: the whole
  tree (``lisa map synth``), with ``out/split.json``.
- Building blocks for hand-made trees (tests): ``MapBuilder`` / ``empty_expansion`` / ``write_expansion``
  for map expansions, ``SceneSpec`` / ``SamplePoses`` / ``write_tables`` / ``write_placeholders`` for the
  tables and stand-in files, ``sensor_rig`` for calibrations, ``build_town`` for the town itself.
"""

from lisa.map.synth.build import SynthOptions, write_synthetic_tree
from lisa.map.synth.expansion import MapBuilder, empty_expansion, make_token, write_expansion
from lisa.map.synth.sensors import SensorSpec, sensor_rig
from lisa.map.synth.tables import SamplePoses, SceneSpec, TreeIndex, write_placeholders, write_tables
from lisa.map.synth.town import build_town

__all__ = ["MapBuilder", "SamplePoses", "SceneSpec", "SensorSpec", "SynthOptions", "TreeIndex", "build_town",
           "empty_expansion", "make_token", "sensor_rig", "write_expansion", "write_placeholders",
           "write_synthetic_tree", "write_tables"]
