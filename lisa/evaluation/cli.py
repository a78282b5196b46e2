"""``lisa eval``: gIoU / cIoU of a model folder or a training checkpoint over ``--val_dataset``.

Same flags as ``lisa train`` (``--version``, ``--dataset_dir``, ``--val_dataset``, ``--exp_name``,
``--log_base_dir``, ...) plus ``--protocol``, ``--all_queries`` and ``--save_masks``. With ``--resume``
(a run folder, ``ckpt_model`` or tag folder) the checkpoint is merged in memory and evaluated.
Data-parallel when launched with torchrun / deepspeed; metrics go to ``runs/<exp>/metrics.json``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def main(argv=None) -> int:
    from .. import dist
    from ..checkpoint.errors import CheckpointError
    from ..data.problems import DataError
    from ..train.args import build_parser, resolve
    from .run import load_model_for_eval, run_eval

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser("lisa eval")
    ap.description = __doc__.splitlines()[0]
    ap.set_defaults(precision=None, eval_only=True, auto_resume=False)
    args = ap.parse_args(argv)
    try:
        args = resolve(args, argv)
    except ValueError as e:
        ap.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        dist.init_torch_distributed()
        model, tokenizer = load_model_for_eval(args)
        run_eval(args, model, tokenizer, Path(args.log_base_dir) / args.exp_name)
    except (ValueError, CheckpointError, DataError, FileNotFoundError) as e:
        print(f"lisa eval: {e}", file=sys.stderr)
        return 2
    return 0
