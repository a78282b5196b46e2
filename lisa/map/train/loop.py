"""The training loop of the map detector: micro-steps, gradient accumulation, clipping, the warm-up +
cosine schedule, log lines, TensorBoard, progress bar, validations and saves.

Data parallel through torch's DistributedDataParallel (gloo on CPU, NCCL on GPUs): gradients are
averaged over processes and the losses are normalised by the global number of GT instances (see
``model/losses.py``), so N processes train like one process on the same global batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ... import dist
from ..model.losses import LOSS_KEYS
from .sampling import epoch_loader
from .state import atomic_write, publish, save_train_state

log = logging.getLogger("lisa.map.train")
LR_NAMES = ("q", "m", "d", "llm")


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and what to try."""


def warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        span = max(total - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))

    return factor


def oom_message(opts) -> str:
    return (f"out of memory at --batch_size {opts.batch_size}: lower --batch_size (and raise "
            f"--grad_accumulation_steps to keep the global batch), train in --bf16 or --fp16, turn on "
            f"--gradient_checkpointing, or use a smaller --image_size")


@dataclass
class MapTrainer:
    model: torch.nn.Module  # the detector (unwrapped)
    opts: object  # TrainOptions
    run_dir: Path
    dataset: object
    collate_fn: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: object = None
    writer: object = None  # ScalarWriter (main process only)
    validate: object = None  # callable(model) -> {"mAP": ...} or None
    on_step: object = None  # callable(trainer) after every optimizer step (tests)
    device: torch.device = torch.device("cpu")
    autocast_dtype: torch.dtype | None = None
    state: dict = field(default_factory=dict)
    engine: torch.nn.Module | None = None  # DDP wrapper or the model
    stopped: bool = False
    step_lrs: dict = field(default_factory=dict)

    def __post_init__(self):
        self.state = {"global_step": 0, "epoch": 0, "step_in_epoch": 0, "best_metric": None, "samples_seen": 0,
                      "train_seconds": 0.0, "bad_steps": 0, "epoch_sums": [0.0] * len(LOSS_KEYS),
                      "epoch_count": 0, **self.state}
        if self.engine is None:
            self.engine = self.model
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

    # ---- sizes ----------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        from .sampling import steps_per_epoch

        return steps_per_epoch(len(self.dataset), self.opts.batch_size, dist.world_size(),
                               self.opts.grad_accumulation_steps)

    @property
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.opts.epochs
        return min(total, self.opts.max_steps) if self.opts.max_steps else total

    # ---- one optimizer step -------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _forward_backward(self, batch: dict, last_micro: bool) -> torch.Tensor:
        inputs = {k: batch[k].to(self.device) for k in ("images", "features") if k in batch}
        sync = contextlib.nullcontext() if last_micro or self.engine is self.model else self.engine.no_sync()
        with sync:
            with self._autocast():
                out = self.engine(**inputs, return_loss=True, targets=batch["targets"])
            loss = out["loss_total"] / self.opts.grad_accumulation_steps
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
        return torch.stack([out[k].detach().float() for k in LOSS_KEYS]).cpu()

    def train_step(self, it) -> tuple[torch.Tensor, bool]:
        """Accumulated micro-steps + one optimizer step. Returns (mean losses over processes, skipped)."""
        accum = self.opts.grad_accumulation_steps
        sums = torch.zeros(len(LOSS_KEYS), dtype=torch.float64)
        for a in range(accum):
            batch = next(it)
            try:
                sums += self._forward_backward(batch, a == accum - 1).double()
            except torch.cuda.OutOfMemoryError as e:
                raise TrainingError(oom_message(self.opts)) from e
        losses = dist.all_reduce_sum(sums / accum) / dist.world_size()
        finite = bool(torch.isfinite(losses).all())
        if finite:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if self.opts.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.trainable, self.opts.grad_clip)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_lrs = {g.get("name"): g["lr"] for g in self.optimizer.param_groups}  # the LRs this step used
        self.scheduler.step()
        return losses, not finite

    # ---- epochs ---------------------------------------------------------------------------------
    def lr_text(self) -> str:
        by_name = self.step_lrs
        return " ".join(f"{n}={by_name[n]:.2e}" for n in LR_NAMES if n in by_name)

    def train_epoch(self, epoch: int, start_step: int) -> bool:
        """Runs ``epoch`` from ``start_step``; returns whether it ran to its end (not stopped by
        --max_steps before). ``self.stopped`` says whether --max_steps was reached."""
        opts, state, spe = self.opts, self.state, self.steps_per_epoch
        self.engine.train()
        loader = epoch_loader(self.dataset, self.collate_fn, batch_size=opts.batch_size, world=dist.world_size(),
                              rank=dist.rank(), accumulation=opts.grad_accumulation_steps, seed=opts.seed,
                              epoch=epoch, start_step=start_step, num_workers=opts.num_workers)
        it = iter(loader)
        bar = tqdm(total=spe, initial=start_step, desc=f"epoch {epoch + 1}/{opts.epochs}", unit="step",
                   disable=not (dist.is_main() and opts.progress), dynamic_ncols=True, leave=False)
        try:
            for step in range(start_step, spe):
                t0 = time.perf_counter()
                losses, skipped = self.train_step(it)
                elapsed = time.perf_counter() - t0
                state["global_step"] += 1
                state["epoch"], state["step_in_epoch"] = epoch, step + 1
                state["train_seconds"] += elapsed
                state["samples_seen"] += opts.batch_size * opts.grad_accumulation_steps * dist.world_size()
                if skipped:
                    state["bad_steps"] += 1
                    log.warning("step %d: non-finite loss, the optimizer step was skipped", state["global_step"])
                else:
                    state["epoch_sums"] = [s + float(v) for s, v in zip(state["epoch_sums"], losses)]
                    state["epoch_count"] += 1
                self._log(epoch, step, losses, elapsed, bar)
                done = bool(opts.max_steps) and state["global_step"] >= opts.max_steps
                if opts.save_steps and state["global_step"] % opts.save_steps == 0 and step + 1 < spe:
                    self.save_state()
                if self.on_step is not None:
                    self.on_step(self)
                if done:
                    self.stopped = True
                    return step + 1 == spe
        finally:
            bar.close()
        return True

    def _averages(self) -> list[float]:
        n = max(self.state["epoch_count"], 1)
        return [s / n for s in self.state["epoch_sums"]]

    def _log(self, epoch: int, step: int, losses: torch.Tensor, elapsed: float, bar) -> None:
        if not dist.is_main():
            return
        opts, state = self.opts, self.state
        vals = dict(zip(LOSS_KEYS, (float(v) for v in losses)))
        avgs = dict(zip(LOSS_KEYS, self._averages()))
        record = {"step": state["global_step"], "epoch": epoch + 1, **vals,
                  "lr": dict(self.step_lrs),
                  "step_s": round(elapsed, 4), "train_seconds": round(state["train_seconds"], 3)}
        with open(self.run_dir / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        bar.set_postfix(loss=f"{vals['loss_total']:.4f}", avg=f"{avgs['loss_total']:.4f}", refresh=False)
        bar.update(1)
        if state["global_step"] % opts.log_steps == 0 or step + 1 == self.steps_per_epoch:
            line = (f"Epoch [{epoch + 1}/{opts.epochs}] Step [{step + 1}/{self.steps_per_epoch}] "
                    f"Loss: {vals['loss_total']:.4f} (Avg: {avgs['loss_total']:.4f}) LR: {self.lr_text()}")
            parts = "  ".join(f"{k}: {vals[k]:.4f} (Avg: {avgs[k]:.4f})" for k in LOSS_KEYS[1:])
            tqdm.write(line)
            tqdm.write("  " + parts)
            if self.writer is not None:
                for k in LOSS_KEYS:
                    self.writer.scalar(f"train/{k}", vals[k], state["global_step"])
                for name, lr in self.step_lrs.items():
                    self.writer.scalar(f"lr/{name}", lr, state["global_step"])
                self.writer.scalar("train/samples_per_s", opts.batch_size * opts.grad_accumulation_steps
                                   * dist.world_size() / max(elapsed, 1e-9), state["global_step"])

    def counters(self) -> dict:
        return {**self.state, "world_size": dist.world_size()}

    def save_state(self) -> None:
        save_train_state(self.run_dir, self.model, self.optimizer, self.scheduler, self.scaler, self.counters(),
                         dist.rank(), dist.is_main(), dist.barrier)

    def end_of_epoch(self, epoch: int) -> dict | None:
        """Validate, publish epoch_N (and best_model when it improved), save the training state."""
        state = self.state
        metrics = None
        if self.validate is not None:
            if dist.is_main():
                metrics = self.validate(self.model)
                self.model.train()
            dist.barrier()
        train_loss = self._averages()[0]
        if dist.is_main():
            if metrics is not None:
                score, better = float(metrics["mAP"]), lambda a, b: a > b
                with open(self.run_dir / "val_log.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps({"epoch": epoch + 1, "step": state["global_step"],
                                        "train_seconds": round(state["train_seconds"], 3), **metrics}) + "\n")
                tqdm.write(f"Epoch [{epoch + 1}/{self.opts.epochs}] val mAP: {score:.4f}  " + "  ".join(
                    f"{c}: {v:.4f}" for c, v in metrics.get("class_ap", {}).items()))
                if self.writer is not None:
                    self.writer.scalar("val/mAP", score, state["global_step"])
            else:
                score, better = train_loss, lambda a, b: a < b
            info = {"epoch": epoch + 1, "global_step": state["global_step"], "train_loss": train_loss,
                    "val": metrics}
            publish(self.model, self.run_dir, f"epoch_{epoch + 1}", info)
            if state["best_metric"] is None or better(score, state["best_metric"]):
                state["best_metric"] = score
                publish(self.model, self.run_dir, "best_model", info)
                atomic_write(self.run_dir / "best.json", json.dumps(info, indent=2))
        state["best_metric"] = dist.all_gather_objects(state["best_metric"])[0]
        state["epoch_sums"], state["epoch_count"] = [0.0] * len(LOSS_KEYS), 0
        self.save_state()
        return metrics

    def fit(self) -> None:
        spe = self.steps_per_epoch
        start_epoch, start_step = divmod(self.state["global_step"], spe)
        for epoch in range(start_epoch, self.opts.epochs):
            if self.opts.max_steps and self.state["global_step"] >= self.opts.max_steps:
                break
            finished = self.train_epoch(epoch, start_step if epoch == start_epoch else 0)
            last = epoch + 1 == self.opts.epochs or self.stopped
            if finished and ((epoch + 1) % self.opts.eval_epochs == 0 or last):
                self.end_of_epoch(epoch)
            elif finished:
                self.state["epoch_sums"], self.state["epoch_count"] = [0.0] * len(LOSS_KEYS), 0
                self.save_state()
            else:
                self.save_state()
            if self.stopped:
                break
