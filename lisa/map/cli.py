"""``lisa map <verb>``: a small table from verbs to the ``main(argv)`` of each map command module."""

from __future__ import annotations

import sys

from lisa.verbs import dispatch

# verb -> (module, function, one-line help). Imported lazily so `lisa map --help` stays fast.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "synth": ("lisa.map.synth.cli", "main", "write a small synthetic nuScenes tree with a map expansion"),
    "gt-cache": ("lisa.map.gt.cli", "main", "build the ground-truth vector cache of a split"),
    "eval": ("lisa.map.evaluation.cli", "main", "Chamfer-distance AP of map predictions"),
    "show": ("lisa.map.viz.cli", "main", "draw a sample's map vectors (BEV) beside its front camera"),
    "train": ("lisa.map.train.cli", "main", "train the LLaVA map detector"),
    "predict": ("lisa.map.inference.cli", "main", "predict one sample's map and draw it over the GT"),
    "params": ("lisa.map.model.cli", "main", "list the map detector's trainable tensors"),
    "demo": ("lisa.map.demo.cli", "main", "train and evaluate a tiny map detector on the synthetic town"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch("lisa map", COMMANDS, list(sys.argv[1:] if argv is None else argv))
