"""Shared, once-per-session artefacts of the training / evaluation / export tests.

pytest instantiates a fixture once per module that defines it, so the expensive things (fixture
data tree, tiny base models, the reference training run) are cached here at module level.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

_CACHE: dict = {}


def cached(key, build):
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def data_tree(tmp_path_factory) -> Path:
    def build():
        from helpers.fixtures import write_fixture_tree

        root = tmp_path_factory.mktemp("train_data")
        write_fixture_tree(root)
        return root
    return cached("data", build)


def tiny_llava(tmp_path_factory) -> Path:
    def build():
        from lisa.checkpoint.tiny import make_tiny_llava

        out = tmp_path_factory.mktemp("llava") / "tiny-llava"
        make_tiny_llava(out, version="llama2")
        return out
    return cached("llava", build)


def tiny_sam(tmp_path_factory) -> Path:
    def build():
        from lisa.checkpoint.tiny import write_tiny_sam

        return write_tiny_sam(tmp_path_factory.mktemp("sam") / "sam_tiny.pth")
    return cached("sam", build)


def base_args(data: Path, runs: Path, version, **kw) -> dict:
    args = dict(version=str(version), dataset_dir=str(data), log_base_dir=str(runs), epochs=1, steps_per_epoch=4,
                batch_size=2, grad_accumulation_steps=1, precision="fp32", workers=0, lr=1e-3, warmup_steps=2,
                sample_rates="1,1,1,1", save_steps=2, print_freq=1)
    args.update(kw)
    return args


def reference_run(tmp_path_factory, tiny_ckpt) -> dict:
    """A 4-step run over every family with validation at the end; the module state after each step."""
    def build():
        from lisa.train import run

        runs = tmp_path_factory.mktemp("runs")
        states = {}

        def snapshot(trainer):
            states[trainer.state["global_step"]] = copy.deepcopy(
                {k: v.detach().cpu() for k, v in trainer.engine.module.state_dict().items()})
        args = base_args(data_tree(tmp_path_factory), runs, tiny_ckpt, exp_name="ref")
        run_dir = run(args, on_step=snapshot)
        log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
        return {"run_dir": run_dir, "states": states, "args": args, "log": log, "runs": runs}
    return cached("reference_run", build)
