"""LoRA training of LISA / LLaVA models through DeepSpeed (``lisa train``).

Python API: ``lisa.train.run(args) -> run_dir`` with ``TrainOptions`` (``lisa.train.args.options``)
or a dict of flag names, e.g. ``run({"version": "ckpt", "dataset_dir": "data", "epochs": 1})``.
"""


def run(args, **kwargs):
    from .session import run as _run

    return _run(args, **kwargs)


__all__ = ["run"]
