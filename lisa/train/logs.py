"""Scalar logging to TensorBoard event files in the run folder and, optionally, Weights & Biases."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("lisa.train")


class ScalarWriter:
    def __init__(self, run_dir: Path, use_wandb: bool = False, config: dict | None = None, name: str = "",
                 purge_step: int | None = None):
        self.tb = None
        self.wandb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            # purge_step: a resumed run hides the events it is about to write again
            self.tb = SummaryWriter(str(run_dir), purge_step=purge_step)
        except ImportError:
            log.warning("tensorboard is not installed: no event files (pip install tensorboard)")
        if use_wandb:
            try:
                import wandb
            except ImportError:
                raise ValueError("--wandb: the wandb package is not installed (pip install wandb)") from None
            self.wandb = wandb.init(project="lisa", name=name or None, config=config or {}, dir=str(run_dir))

    def scalar(self, name: str, value: float, step: int) -> None:
        if self.tb is not None:
            self.tb.add_scalar(name, value, step)
        if self.wandb is not None:
            self.wandb.log({name: value}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
