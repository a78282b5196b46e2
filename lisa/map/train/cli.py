"""``lisa map train``: train the LLaVA map detector (stage 2, or stage 3 with ``--stage 3``).

One process: ``lisa map train --dataroot D --version V ...``; several: ``torchrun --nproc_per_node N
-m lisa map train ...`` (or DeepSpeed's launcher, which sets the same environment)."""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from .options import build_parser

    ap = build_parser()
    ns = ap.parse_args(sys.argv[1:] if argv is None else argv)
    from ..checkpoint.io import DetectorCheckpointError
    from ..checkpoint.sources import SourceError
    from .loop import TrainingError
    from .options import TrainOptions
    from .run import run

    try:
        opts = TrainOptions.from_namespace(ns)
        opts.check()
        run_dir = run(opts)
    except (ValueError, FileNotFoundError, SourceError, DetectorCheckpointError, TrainingError) as e:
        print(f"lisa map train: {e}", file=sys.stderr)
        return 2
    print(f"run folder: {run_dir}")
    return 0
