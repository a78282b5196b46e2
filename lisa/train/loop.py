"""The training loop: micro-steps through DeepSpeed, loss meters, progress, logs, periodic saves.

Non-finite losses: the micro-batch is still back-propagated, so every rank runs the same
collectives; DeepSpeed's ZeRO optimizer then finds the non-finite gradients and skips the whole
optimizer step (parameters, optimizer state and LR schedule untouched). The step is counted, and
after ``--max_bad_steps`` such steps in a row the run stops with an explanation. A run (or epoch)
that ends without a single finite step learned nothing: it stops with the cause (micro-batches
without any supervised token point at labels that did not line up with the tokenization) instead
of writing a checkpoint.

With ``--epoch_over_data`` a rank's share of the pass can end before the epoch's last micro-step
(the last step is short): the missing micro-batches count as empty ones, so every rank still runs
the same number of micro-steps and collectives.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import dist
from ..checkpoint import run_folder
from ..constants import IGNORE_INDEX
from ..data.problems import DataError
from ..model.batch import Batch
from . import resume
from .data import epoch_loader

log = logging.getLogger("lisa.train")

LOSS_KEYS = ("loss", "ce_loss", "mask_bce_loss", "mask_dice_loss", "mask_loss")


class TrainingError(RuntimeError):
    """A run that cannot go on (diverged, no data, ...); the message says why and what to try."""


def batch_to(batch: Batch, device, dtype: torch.dtype) -> Batch:
    return batch.to(device, dtype)


def zero_loss(module: torch.nn.Module) -> torch.Tensor:
    """A loss of 0 connected to every trainable parameter (gradients exactly 0)."""
    terms = [p.sum() * 0.0 for p in module.parameters() if p.requires_grad]
    return torch.stack([t.float() for t in terms]).sum()


@dataclass
class Trainer:
    engine: object
    args: object
    run_dir: Path
    dataset: object
    collate_fn: object
    dtype: torch.dtype
    state: dict
    writer: object = None  # TensorBoard / wandb fan-out (see logs.py)
    validate: object = None  # callable(epoch) -> metrics dict or None
    on_step: object = None  # test hook: callable(trainer) after every optimizer step
    bad_in_a_row: int = 0
    interval: dict = field(default_factory=dict)
    present: set = field(default_factory=set)  # loss parts the model reports (no mask parts for LLaVA)
    last_batch: dict | None = None

    @property
    def zero3(self) -> bool:
        stage = getattr(self.engine, "zero_optimization_stage", None)
        return callable(stage) and stage() == 3

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / run_folder.CKPT_DIR

    # ---- one optimizer step -------------------------------------------------------------------
    def _micro_batches(self, it):
        engine, args = self.engine, self.args
        # losses, images, bad micro-batches, micro-batches without a supervised token, data time
        sums = torch.zeros(len(LOSS_KEYS) + 4, dtype=torch.float64)
        for _ in range(args.grad_accumulation_steps):
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                batch = None  # this rank's part of a data pass ended (see the module docstring)
            except DataError as e:
                if args.strict_data:
                    raise
                log.warning("skipping a micro-batch: %s", e)
                batch = None
            sums[-1] += time.perf_counter() - t
            if batch is None and self.zero3 and self.last_batch is not None:
                # ZeRO-3 needs the same module calls on every process: replay the last batch, times 0
                engine.backward(engine(**self.last_batch)["loss"] * 0.0)
                engine.step()
                continue
            if batch is None:
                if self.zero3:
                    raise TrainingError("the first micro-batch could not be loaded, and ZeRO-3 cannot skip it "
                                        "(see the warning above; `lisa data check` finds unusable samples)")
                engine.backward(zero_loss(engine.module))
                engine.step()
                continue
            if not bool((batch["labels"] != IGNORE_INDEX).any()):
                sums[len(LOSS_KEYS) + 2] += 1
            batch = batch_to(batch, engine.device, self.dtype)
            if self.zero3:
                self.last_batch = batch
            out = engine(**batch)
            # Every rank uses the same parameters, [SEG] or not: the model's forward runs the [SEG]
            # path on a zero prompt for an image without [SEG] (LisaForSegmentation.forward).
            loss = out["loss"]
            n = batch.images.shape[0]
            if torch.isfinite(loss.detach()).all():
                for i, k in enumerate(LOSS_KEYS):
                    v = out.get(k)
                    if v is not None:
                        sums[i] += float(v.detach()) * n
                        self.present.add(k)
                sums[len(LOSS_KEYS)] += n
            else:
                sums[len(LOSS_KEYS) + 1] += 1
            engine.backward(loss)
            engine.step()
        return sums

    def train_epoch(self, epoch: int, start_step: int) -> bool:
        """Runs the epoch from ``start_step``; returns False when --max_steps stopped it early."""
        args, engine, state = self.args, self.engine, self.state
        engine.train()
        it = iter(epoch_loader(self.dataset, self.collate_fn, args, epoch, start_step))
        bar = tqdm(total=args.steps_per_epoch, initial=start_step, desc=f"epoch {epoch}",
                   disable=not dist.is_main(), dynamic_ncols=True, unit="step")
        try:
            for step_in_epoch in range(start_step, args.steps_per_epoch):
                t0 = time.perf_counter()
                finite_before = self.finite_steps
                sums = dist.all_reduce_sum(self._micro_batches(it))
                elapsed = time.perf_counter() - t0
                state["global_step"] += 1
                state["epoch"] = epoch
                state["step_in_epoch"] = step_in_epoch + 1
                images = float(sums[len(LOSS_KEYS)])
                state["samples_seen"] = int(state.get("samples_seen", 0) + images)
                state["train_seconds"] = float(state.get("train_seconds", 0.0)) + elapsed
                bad = float(sums[len(LOSS_KEYS) + 1]) > 0
                state["unsupervised"] = int(state.get("unsupervised", 0) + float(sums[len(LOSS_KEYS) + 2]))
                state["finite_steps"] = finite_before + (0 if bad else 1)
                self._account_bad(bad)
                record = self._record(sums, images, elapsed, bad)
                self._log(record, bar)
                last_of_epoch = step_in_epoch + 1 == args.steps_per_epoch
                stop = bool(args.max_steps) and state["global_step"] >= args.max_steps and not last_of_epoch
                if (args.save_steps and state["global_step"] % args.save_steps == 0 and not last_of_epoch) or stop:
                    self.save(final=stop)
                if self.on_step is not None:
                    self.on_step(self)
                if stop:
                    return False
        finally:
            bar.close()
        return True

    def _account_bad(self, bad: bool) -> None:
        state = self.state
        if not bad:
            self.bad_in_a_row = 0
            return
        self.bad_in_a_row += 1
        state["bad_steps"] = int(state.get("bad_steps", 0)) + 1
        log.warning("step %d: non-finite loss; the optimizer step was skipped (%d in a row, %d in total)",
                    state["global_step"], self.bad_in_a_row, state["bad_steps"])
        if self.bad_in_a_row >= self.args.max_bad_steps:
            raise TrainingError(
                f"the loss was NaN/inf in {self.bad_in_a_row} optimizer steps in a row (up to step "
                f"{state['global_step']}); the run stopped (--max_bad_steps {self.args.max_bad_steps}). "
                "Try a lower --lr, --precision fp32 or bf16 instead of fp16, and check the data "
                "(`lisa data check`). The last good checkpoint is in " + str(self.ckpt_dir)
                + (f". {state['unsupervised']} micro-batch(es) had no supervised token: the answer labels did not "
                   "line up with the tokenized conversations (check --conv_type against the tokenizer)"
                   if state.get("unsupervised") else ""))

    def _record(self, sums, images, elapsed, bad) -> dict:
        lr = self.engine.get_lr()[0] if hasattr(self.engine, "get_lr") else None
        rec = {"step": self.state["global_step"], "epoch": self.state["epoch"], "skipped": bad,
               "lr": lr, "samples_per_s": images / elapsed if elapsed > 0 else None,
               "data_s": float(sums[-1]) / dist.world_size(), "step_s": elapsed}
        for i, k in enumerate(LOSS_KEYS):
            rec[k] = float(sums[i]) / images if images and k in self.present else None
        return rec

    def _log(self, rec: dict, bar) -> None:
        for k in LOSS_KEYS + ("samples_per_s",):
            if rec.get(k) is not None:
                s, n = self.interval.get(k, (0.0, 0))
                self.interval[k] = (s + rec[k], n + 1)
        if not dist.is_main():
            return
        with open(self.run_dir / run_folder.TRAIN_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        post = {k: f"{rec[k]:.4f}" for k in ("loss", "ce_loss", "mask_bce_loss", "mask_dice_loss")
                if rec.get(k) is not None}
        if rec.get("samples_per_s"):
            post["samples/s"] = f"{rec['samples_per_s']:.2f}"
        bar.set_postfix(post, refresh=False)
        bar.update(1)
        step = rec["step"]
        if self.writer is not None and (step % self.args.print_freq == 0):
            for k, (s, n) in self.interval.items():
                name = f"metrics/{k}" if k == "samples_per_s" else f"train/{k}"
                self.writer.scalar(name, s / max(n, 1), step)
            if rec.get("lr") is not None:
                self.writer.scalar("train/lr", rec["lr"], step)
            self.writer.scalar("metrics/total_secs_per_batch", rec["step_s"], step)
            self.writer.scalar("metrics/data_secs_per_batch", rec["data_s"], step)
            self.interval.clear()

    @property
    def finite_steps(self) -> int:
        state = self.state  # runs saved before this counter existed: every step that was not skipped
        return int(state.get("finite_steps", state["global_step"] - int(state.get("bad_steps", 0))))

    def nothing_learned(self) -> TrainingError:
        state = self.state
        cause = (f"{state.get('unsupervised', 0)} micro-batch(es) had no supervised token at all: the answer "
                 "labels did not line up with the tokenized conversations (see the label_mismatch problems "
                 "counted above; check --conv_type against the tokenizer)" if state.get("unsupervised")
                 else "the loss was NaN/inf every time (try a lower --lr, --precision fp32 or bf16 instead of "
                 "fp16, and `lisa data check`)")
        return TrainingError(f"none of the {state['global_step']} optimizer steps had a finite loss, so nothing "
                             f"was learned and no checkpoint was written: {cause}")

    # ---- checkpoints --------------------------------------------------------------------------
    def save(self, final: bool = True) -> str | None:
        """Save a checkpoint; with no finite step so far a periodic save is skipped and a final one
        (end of epoch or of the run) raises :meth:`nothing_learned`."""
        if self.state["global_step"] and self.finite_steps == 0:
            if final:
                raise self.nothing_learned()
            log.warning("step %d: no finite step yet, no checkpoint saved", self.state["global_step"])
            return None
        state = dict(self.state, world_size=dist.world_size())
        keep = {run_folder.read_marker(self.ckpt_dir, run_folder.BEST) or ""}
        try:
            tag = resume.save(self.engine, self.ckpt_dir, state["global_step"], state, keep)
        except resume.CheckpointSaveError as e:
            raise TrainingError(str(e)) from None
        log.info("saved %s", self.ckpt_dir / tag)
        return tag

    def end_of_epoch(self, epoch: int) -> None:
        state = self.state
        metrics = self.validate(epoch) if self.validate is not None else None
        is_best = False
        if metrics is not None:
            giou, ciou = metrics["giou"], metrics["ciou"]
            is_best = giou > state.get("best_giou", -1.0)
            if is_best:
                state["best_giou"], state["best_ciou"] = giou, ciou
            if self.writer is not None:
                self.writer.scalar("val/giou", giou, state["global_step"])
                self.writer.scalar("val/ciou", ciou, state["global_step"])
            if dist.is_main():  # one line per validation: the learning curve against training time
                with open(self.run_dir / run_folder.VAL_LOG, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"epoch": epoch, "step": state["global_step"],
                                        "train_seconds": round(float(state.get("train_seconds", 0.0)), 3),
                                        "giou": giou, "ciou": ciou}) + "\n")
        if is_best:
            state["best_tag"] = run_folder.tag_for(state["global_step"])
        tag = self.save()
        if is_best:
            resume.mark_best(self.ckpt_dir, tag)
            if dist.is_main():
                run_folder.atomic_write(self.run_dir / run_folder.BEST_FILE, json.dumps(
                    {"tag": tag, "epoch": epoch, "global_step": state["global_step"],
                     "giou": state["best_giou"], "ciou": state["best_ciou"]}, indent=2))
        stats = getattr(self.dataset, "counter", None)
        if stats is not None and dist.is_main() and stats.total():
            log.warning("epoch %d: %s", epoch, stats.report())
