"""`lisa train` through DeepSpeed ZeRO-2 in one CPU process (gloo), on the fixture data of every family."""

import json
import shutil

import pytest
import torch

from helpers.train import base_args, data_tree, reference_run


@pytest.fixture(scope="module")
def ref(tmp_path_factory, tiny_ckpt):
    return reference_run(tmp_path_factory, tiny_ckpt)


def test_run_folder_logs_and_checkpoints(ref):
    run_dir = ref["run_dir"]
    log = ref["log"]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    assert all(r["samples_per_s"] > 0 for r in log)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["deepspeed_config"]["zero_optimization"]["stage"] == 2 and cfg["lora_r"] == 8
    assert list(run_dir.glob("events.out.tfevents*"))
    ckpt = run_dir / "ckpt_model"
    assert (ckpt / "latest").read_text().strip() == "global_step4"
    assert (ckpt / "global_step4" / "COMPLETE").is_file()
    assert (ckpt / "best").read_text().strip() == "global_step4"
    assert not (ckpt / "global_step2").exists()  # pruned: only latest and best are kept
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["protocol"] == "teacher" and metrics["num_images"] == 2
    assert json.loads((run_dir / "best.json").read_text())["giou"] == pytest.approx(metrics["giou"])


def test_frozen_parts_unchanged_trainable_parts_changed(ref, tiny_model):
    initial = tiny_model[0].state_dict()
    final = ref["states"][4]
    changed, same = set(), set()
    for k, v in final.items():
        if ".lora_" in k:
            continue
        base = initial[k.replace(".base_layer.", ".")]
        (same if torch.equal(v, base) else changed).add(k)
    for k in same | changed:
        trainable = k.startswith(("sam.mask_decoder.", "text_hidden_fcs.")) or k in (
            "llm.model.embed_tokens.weight", "llm.lm_head.weight")
        if not trainable:
            assert k in same, f"frozen {k} changed"
    for k in ("llm.lm_head.weight", "llm.model.embed_tokens.weight", "text_hidden_fcs.0.0.weight",
              "sam.mask_decoder.iou_token.weight"):
        assert k in changed, f"trainable {k} did not change"
    lora_b = [v for k, v in final.items() if ".lora_B." in k]
    assert len(lora_b) == 4 and all(v.abs().sum() > 0 for v in lora_b)  # B starts at 0


def test_kill_and_auto_resume_reproduce_the_uninterrupted_run(ref, tmp_path_factory):
    from lisa.train import run

    class Killed(Exception):
        pass

    def kill_at_3(trainer):
        if trainer.state["global_step"] == 3:
            raise Killed()

    args = dict(ref["args"], exp_name="killed")
    with pytest.raises(Killed):
        run(args, on_step=kill_at_3)
    ckpt = ref["runs"] / "killed" / "ckpt_model"
    assert (ckpt / "latest").read_text().strip() == "global_step2"
    # a save interrupted half-way: files but no COMPLETE marker; it must never be resumed from
    half = ckpt / "global_step3"
    shutil.copytree(ckpt / "global_step2", half)
    (half / "COMPLETE").unlink()
    run_dir = run(args)
    assert not half.exists()
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    resumed = [r for r in log][-2:]
    expected = ref["log"][2:]
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # step 3 of the killed run is not logged twice
    for a, b in zip(resumed, expected):
        assert a["loss"] == b["loss"] and a["lr"] == b["lr"], (a, b)
    m_ref = json.loads((ref["run_dir"] / "metrics.json").read_text())
    m_res = json.loads((run_dir / "metrics.json").read_text())
    assert m_res["samples"] == m_ref["samples"]


def test_losses_decrease_on_a_repeated_batch_of_every_family(tmp_path_factory, tiny_ckpt):
    from lisa import dist
    from lisa.data.collate import collate
    from lisa.train.args import namespace
    from lisa.train.data import build_dataset
    from lisa.train.engine import create_engine
    from lisa.train.loop import batch_to
    from lisa.train.model_setup import build_model

    data = data_tree(tmp_path_factory)
    args = namespace(**base_args(data, tmp_path_factory.mktemp("rb"), tiny_ckpt, exp_name="rb", lr=3e-3,
                                 steps_per_epoch=100, lora_dropout=0.0))
    dist.init_deepspeed_distributed()
    model, tok, _ = build_model(args)
    engine, _ = create_engine(model, args)
    for family, rates in (("sem_seg", "1,0,0,0"), ("refer_seg", "0,1,0,0"), ("vqa", "0,0,1,0"),
                          ("reason_seg", "0,0,0,1")):
        args.sample_rates = rates
        ds = build_dataset(args, model.config, 0)
        assert ds.names == [family]
        batch = collate([ds[0], ds[1]], tok, num_image_tokens=model.config.num_image_tokens)
        batch = batch_to(batch, engine.device, torch.float32)
        losses = []
        for _ in range(6):
            out = engine(**batch)
            losses.append(float(out["loss"].detach()))
            engine.backward(out["loss"])
            engine.step()
        assert all(torch.isfinite(torch.tensor(losses))), (family, losses)
        # WarmupDecayLR gives lr 0 to the first two optimizer steps (as DeepSpeed does for the original)
        assert all(b < a for a, b in zip(losses[2:], losses[3:])), (family, losses)
        assert losses[-1] < losses[0], (family, losses)


def test_lr_scales_survive_the_schedule(tmp_path_factory, tiny_ckpt):
    """--lr_scales groups keep their ratio through DeepSpeed's WarmupDecayLR (one max lr per group)."""
    from lisa import dist
    from lisa.train.args import namespace
    from lisa.train.engine import create_engine
    from lisa.train.model_setup import build_model

    data = data_tree(tmp_path_factory)
    args = namespace(**base_args(data, tmp_path_factory.mktemp("ls"), tiny_ckpt, exp_name="ls", lr=1e-3,
                                 warmup_steps=2, lr_scales="sam.mask_decoder=0.25"))
    dist.init_deepspeed_distributed()
    model, _, _ = build_model(args)
    engine, resolved = create_engine(model, args)
    groups = engine.optimizer.param_groups  # ZeRO's flat partitions, one per group
    assert len(groups) == 2 and resolved["optimizer"]["params"]["lr"] == [1e-3, 2.5e-4]
    decoder = sum(p.numel() for n, p in model.named_parameters() if n.startswith("sam.mask_decoder."))
    assert sum(p.numel() for p in groups[1]["params"]) == decoder
    seen = []
    for _ in range(5):
        engine.lr_scheduler.step()
        lrs = [g["lr"] for g in groups]
        seen.append(lrs[0])
        assert lrs[1] == 0 if lrs[0] == 0 else abs(lrs[1] / lrs[0] - 0.25) < 1e-9, lrs
    assert max(seen) == 1e-3 and seen[-1] < 1e-3  # warmed up to --lr, then decaying


def test_non_finite_losses_skip_the_step_and_stop_the_run(tmp_path_factory, tiny_ckpt, tiny_model, monkeypatch):
    from lisa.model.lisa import LisaForSegmentation
    from lisa.train import run
    from lisa.train.loop import TrainingError

    original = LisaForSegmentation.forward

    def nan_forward(self, *a, **kw):
        out = original(self, *a, **kw)
        out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(LisaForSegmentation, "forward", nan_forward)
    seen = []

    def watch(trainer):
        seen.append((trainer.engine.skipped_steps, trainer.engine.module.llm.lm_head.weight.detach().clone()))
    args = base_args(data_tree(tmp_path_factory), tmp_path_factory.mktemp("nan"), tiny_ckpt, exp_name="nan",
                     max_bad_steps=2, no_eval=True, save_steps=0)
    with pytest.raises(TrainingError, match="NaN/inf in 2 optimizer steps in a row"):
        run(args, on_step=watch)
    assert [s for s, _ in seen] == [1]  # DeepSpeed skipped the step; the second bad one stopped the run
    assert torch.equal(seen[0][1], tiny_model[0].llm.lm_head.weight)  # no update was applied
