"""Two gloo processes under torchrun: data-parallel ZeRO-2 training and evaluation."""

import json
import os
import socket
import subprocess
import sys

import pytest

from _train_helpers import base_args, data_tree


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_ckpt):
    runs = tmp_path_factory.mktemp("dist_runs")
    args = base_args(data_tree(tmp_path_factory), runs, tiny_ckpt, exp_name="dp", steps_per_epoch=3, batch_size=1,
                     save_steps=0)
    argv = []
    for k, v in args.items():
        argv += [f"--{k}", str(v)]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_port()}",
           "-m", "lisa", "train", *argv]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return runs / "dp", args


def test_two_processes_train_and_save_all_shards(two_process_run):
    run_dir, _ = two_process_run
    tag = run_dir / "ckpt_model" / "global_step3"
    assert sorted(p.name for p in tag.glob("zero_pp_rank_*_optim_states.pt")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert {p.name for p in tag.glob("rng_state_rank*.pt")} == {"rng_state_rank0.pt", "rng_state_rank1.pt"}
    state = json.loads((tag / "lisa_state.json").read_text())
    assert state["world_size"] == 2 and state["samples_seen"] == 3 * 2  # batch 1 on each of 2 ranks
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["world_size"] == 2


def test_data_parallel_eval_equals_one_process(two_process_run):
    """The validation inside the 2-process run equals a one-process evaluation of the same weights
    (consolidated from both ZeRO shards)."""
    from lisa.data import build_val_dataset
    from lisa.evaluation import evaluate
    from lisa.export.merge import consolidate
    from lisa.train.args import namespace
    from lisa.train.setup import build_model

    run_dir, args = two_process_run
    model, tok, _ = build_model(namespace(**args))
    model.load_state_dict(consolidate(run_dir / "ckpt_model", "global_step3"))
    ds = build_val_dataset(args["dataset_dir"], "ReasonSeg|val", clip_size=56, sam_size=128)
    one = evaluate(model, tok, ds, "teacher", progress=False, name="ReasonSeg|val")
    two = json.loads((run_dir / "metrics.json").read_text())
    assert two["samples"] == one["samples"]
    assert (two["giou"], two["ciou"]) == (one["giou"], one["ciou"])
