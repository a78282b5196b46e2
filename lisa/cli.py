"""The ``lisa`` command: a small table from verbs to the ``main(argv)`` of each command package."""

from __future__ import annotations

import sys

from lisa.verbs import dispatch

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
