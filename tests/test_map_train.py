"""Training the map detector: learning on a fixed batch, the run folder and log lines, exact resume,
and two gloo processes equal to one on the same global batch."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from helpers.threads import one_torch_thread
from lisa.map.checkpoint import build_map_detector
from lisa.map.data.batch import collate, random_dataset
from lisa.map.model.stages import apply_stage, parameter_groups
from lisa.map.train.run import run


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


FAST = dict(preset="tiny", batch_size=2, epochs=2, warmup_steps=2, num_workers=0, lr_qformer=1e-3, lr_queries=1e-3,
            lr_decoder=1e-3, grad_clip=1.0, log_steps=2, progress=False, seed=5)


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch():
    model = build_map_detector(preset="tiny", seed=0)
    apply_stage(model, 2)
    opt = torch.optim.AdamW(parameter_groups(model, 1e-3, 1e-3, 1e-3, 0.0))
    batch = collate([random_dataset(4, seed=1)[i] for i in range(4)])
    losses = []
    for _ in range(25):
        out = model(batch["images"], return_loss=True, targets=batch["targets"])
        out["loss_total"].backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(out["loss_total"]))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


def test_run_folder_log_lines_and_best_model(tmp_path, capsys):
    data = random_dataset(8, seed=2)
    scores = iter([0.2, 0.1])
    run_dir = run(dict(FAST, output_dir=str(tmp_path / "run")), train_set=data,
                  validate=lambda model: {"mAP": next(scores), "class_ap": {"divider": 0.3}})
    out = capsys.readouterr().out
    assert re.search(r"trainable parameters: [\d,]+ of [\d,]+ \(\d+\.\d\d%\)", out)
    lines = re.findall(r"Epoch \[(\d)/2\] Step \[(\d)/4\] Loss: \d+\.\d{4} \(Avg: \d+\.\d{4}\) "
                       r"LR: q=\d\.\d\de[+-]\d\d m=\d\.\d\de[+-]\d\d d=\d\.\d\de[+-]\d\d", out)
    assert [(int(e), int(s)) for e, s in lines] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    assert re.search(r"loss_cls: \d+\.\d{4} \(Avg: \d+\.\d{4}\)\s+loss_pts: .*loss_dir: ", out)
    assert "val mAP: 0.2000" in out
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "epoch_1", "epoch_2", "best_model", "final_model", "train_state", "train_log.jsonl",
            "val_log.jsonl"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["options"]["batch_size"] == 2 and cfg["detector"]["preset"] == "tiny"
    # best_model is epoch 1 (val mAP 0.2 > 0.1), final_model epoch 2
    best, ep1, final = (_weights(run_dir / n) for n in ("best_model", "epoch_1", "final_model"))
    assert all(torch.equal(best[k], ep1[k]) for k in best)
    assert not all(torch.equal(best[k], final[k]) for k in best)
    assert json.loads((run_dir / "best.json").read_text())["epoch"] == 1
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert records[0]["lr"]["q"] == pytest.approx(5e-4)  # warm-up: step 1 of 2


def test_resume_equals_the_uninterrupted_run(tmp_path):
    data = random_dataset(8, seed=3)
    opts = dict(FAST, no_eval=True, save_steps=1)
    straight = run(dict(opts, output_dir=str(tmp_path / "a")), train_set=data)

    class Interrupt(Exception):
        pass

    def stop_at_3(trainer):
        if trainer.state["global_step"] == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(dict(opts, output_dir=str(tmp_path / "b")), train_set=data, on_step=stop_at_3)
    assert not (tmp_path / "b" / "final_model").exists()
    resumed = run(dict(opts, resume=str(tmp_path / "b")), train_set=data)
    a, b = _weights(straight / "final_model"), _weights(resumed / "final_model")
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    log_a = [json.loads(x) for x in (straight / "train_log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss_total"] for r in log_a] == [r["loss_total"] for r in log_b]


WORKER = """
import sys
from lisa.map.data.batch import random_dataset
from lisa.map.train.run import run

opts = dict({fast}, batch_size=1, no_eval=True, output_dir=sys.argv[1])
run(opts, train_set=random_dataset(8, seed=4))
"""


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_on_the_same_global_batch(tmp_path):
    one = run(dict(FAST, batch_size=2, no_eval=True, output_dir=str(tmp_path / "one")),
              train_set=random_dataset(8, seed=4))
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(fast=repr(FAST)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={_port()}", str(script), str(tmp_path / "two")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.loads((tmp_path / "two" / "config.json").read_text())
    assert cfg["world_size"] == 2
    a, b = _weights(one / "final_model"), _weights(tmp_path / "two" / "final_model")
    # equal up to float summation order (batch of 2 vs two batches of 1), which Adam amplifies on
    # tensors whose gradient is about 0 (attention key biases); 8 steps at lr 1e-3 move weights ~1e-2
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=5e-4, msg=k)
    log_a = [json.loads(x)["loss_total"] for x in (one / "train_log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x)["loss_total"] for x in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert log_a == pytest.approx(log_b, rel=1e-4)


def test_stage3_from_a_stage2_detector_trains_the_llm(tmp_path, capsys):
    data = random_dataset(4, seed=6)
    stage2 = run(dict(FAST, epochs=1, no_eval=True, output_dir=str(tmp_path / "s2")), train_set=data)
    full = run(dict(FAST, epochs=1, no_eval=True, stage=3, lr_llm=1e-3, init_from=str(stage2 / "final_model"),
                    output_dir=str(tmp_path / "s3")), train_set=data)
    assert re.search(r"LR: q=\S+ m=\S+ d=\S+ llm=\S+", capsys.readouterr().out)
    before, after = _weights(stage2 / "final_model"), _weights(full / "final_model")
    llm = [k for k in before if k.startswith("llm.")]
    assert llm and any(not torch.equal(before[k], after[k]) for k in llm)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("vision."))  # CLIP stays frozen
    # with LoRA only adapters train; the folder reloads with its adapters
    lora = run(dict(FAST, epochs=1, no_eval=True, stage=3, llm_lora_r=2, lr_llm=1e-3,
                    init_from=str(stage2 / "final_model"), output_dir=str(tmp_path / "lora")), train_set=data)
    from lisa.map.checkpoint import load_detector

    model = load_detector(lora / "final_model")
    assert model.config.llm_lora["r"] == 2
    saved = _weights(lora / "final_model")
    state = model.state_dict()
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    assert any("lora_" in k for k in saved)
