"""``lisa train``: the original train_ds.py command line (see ``lisa train --help``)."""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from ..checkpoint.errors import CheckpointError
    from ..data.problems import DataError
    from .args import parse_args
    from .loop import TrainingError
    from .session import run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run_dir = run(args)
    except (ValueError, CheckpointError, DataError, TrainingError, FileNotFoundError) as e:
        print(f"lisa train: {e}", file=sys.stderr)
        return 2
    print(f"run folder: {run_dir}")
    return 0
