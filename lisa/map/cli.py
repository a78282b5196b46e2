"""``lisa map <verb>``: a small table from verbs to the ``main(argv)`` of each map command module."""

from __future__ import annotations

import importlib
import sys

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


def _usage() -> str:
    width = max(len(v) for v in COMMANDS)
    lines = ["usage: lisa map <command> [options]", "", "commands:"]
    lines += [f"  {verb.ljust(width)}  {text}" for verb, (_, _, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in COMMANDS:
        print(f"lisa map: unknown command {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[verb]
    try:
        entry = getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            print(f"lisa map: the {verb!r} command is not available in this version", file=sys.stderr)
            return 2
        raise
    return int(entry(rest) or 0)
