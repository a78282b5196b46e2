"""The ``lisa`` command: a small table from verbs to the ``main(argv)`` of each command package."""

from __future__ import annotations

import importlib
import sys

# verb -> (module, function, one-line help). Modules are imported lazily so `lisa --help` is fast.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "chat": ("lisa.chat.cli", "main", "chat with a LISA model (interactive or one-shot)"),
    "make-tiny": ("lisa.checkpoint.cli", "main", "write a tiny random checkpoint in the LISA layout"),
    "data": ("lisa.data.cli", "main", "dataset tools: check, convert-refs, subset, synth"),
    "train": ("lisa.train.cli", "main", "train with LoRA through DeepSpeed"),
    "eval": ("lisa.evaluation.cli", "main", "gIoU / cIoU evaluation"),
    "export": ("lisa.export.cli", "main", "DeepSpeed run -> merged model folder"),
    "app": ("lisa.webui.cli", "main", "gradio web demo"),
    "serve": ("lisa.serve.cli", "main", "HTTP API (FastAPI)"),
    "demo": ("lisa.demo.cli", "main", "train and run the embedded shapes demo end to end"),
    "map": ("lisa.map.cli", "main", "vectorized HD-map detection: synth, gt-cache, eval, show, train, ..."),
}


def usage(prog: str, commands: dict[str, tuple[str, str, str]], footer: tuple[str, ...] = ()) -> str:
    width = max(len(v) for v in commands)
    lines = [f"usage: {prog} <command> [options]", "", "commands:"]
    lines += [f"  {verb.ljust(width)}  {text}" for verb, (_, _, text) in commands.items()]
    return "\n".join([*lines, *footer])


def dispatch(prog: str, commands: dict[str, tuple[str, str, str]], argv: list[str],
             footer: tuple[str, ...] = ()) -> int:
    """Run ``argv[0]``'s command from a verb table, importing its module only now."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(prog, commands, footer))
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in commands:
        print(f"{prog}: unknown command {verb!r}\n\n{usage(prog, commands, footer)}", file=sys.stderr)
        return 2
    module, func, _ = commands[verb]
    try:
        entry = getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            print(f"{prog}: the {verb!r} command is not available in this version", file=sys.stderr)
            return 2
        raise
    return int(entry(rest) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `deepspeed -m lisa train ...` runs `python -m lisa --local_rank=N train ...`: move it after the verb
    launcher = [a for a in argv[:1] if a.startswith(("--local_rank=", "--local-rank="))]
    if launcher:
        argv = argv[1:2] + launcher + argv[2:]
    return dispatch("lisa", COMMANDS, argv, ("", "Run `lisa <command> --help` for the options of a command."))


def train_main() -> int:
    """The ``lisa-train`` script: ``lisa train`` for launchers that want a plain executable."""
    return main(["train", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
