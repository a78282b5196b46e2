"""Verb tables: run a command's ``main(argv)`` from a table of verb -> (module, function, help).

Shared by ``lisa`` and ``lisa map``. Modules are imported only when their verb runs, so help is fast.
Also what several commands' ``main`` does first (:func:`parse_and_set_up`): commands may not import
each other's cli modules, so what they share lives here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys


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


def parse_and_set_up(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (``sys.argv[1:]`` when None) for a command with ``--quiet`` and ``--threads`` flags
    (the demos): log INFO lines (warnings only with ``--quiet``) and set torch's CPU threads when given."""
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return args
