"""`lisa demo` end to end (short training through `lisa train`'s code), and what it leaves behind:
a model that learned, a normal model folder that `lisa chat` and `lisa eval` read, reuse on rerun."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lisa.demo.cli import main as demo_main
from lisa.demo.recipe import STEPS_ENV
from lisa.demo.run import DEMO_FILE, evaluate_model, run_demo

SHORT_STEPS = int(os.environ.get("LISA_TEST_DEMO_STEPS", "80"))


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """A short demo (``$LISA_DEMO_STEPS`` steps, two validations) on the default data set."""
    out = tmp_path_factory.mktemp("demo")
    mp = pytest.MonkeyPatch()
    mp.setenv(STEPS_ENV, str(SHORT_STEPS))
    try:
        rc = demo_main(["--out", str(out), "--evals", "2", "--quiet"])
    finally:
        mp.undo()
    assert rc == 0
    return out


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values))


def test_short_demo_learns_to_segment_what_the_words_say(demo_dir):
    info = json.loads((demo_dir / "model" / DEMO_FILE).read_text())
    assert info["recipe"]["steps"] == SHORT_STEPS
    log = [json.loads(line) for line in (demo_dir / "runs" / "demo" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == SHORT_STEPS
    first, last = log[:10], log[-10:]
    for key in ("ce_loss", "mask_loss"):
        assert _mean(r[key] for r in last) < 0.8 * _mean(r[key] for r in first), key
    # held-out data: far better than the same model before training
    untrained = evaluate_model(demo_dir / "base", demo_dir / "data", progress=False)["teacher"]
    trained = info["metrics"]
    assert trained["num_images"] == 200
    assert trained["giou"] > untrained["giou"] + 0.1, (trained["giou"], untrained["giou"])
    assert trained["ciou"] > untrained["ciou"] + 0.1, (trained["ciou"], untrained["ciou"])
    # the learning curve comes from the run's validations, against training seconds
    assert [p["step"] for p in info["curve"]] == [SHORT_STEPS // 2, SHORT_STEPS]
    assert info["curve"][0]["train_seconds"] < info["curve"][1]["train_seconds"]
    # SAM's encoder was pretrained on the kind maps first (in proportion to the shorter run), and its
    # time is part of the training time
    pre = info["sam_pretrain"]
    assert pre["steps"] == round(info["recipe"]["sam_pretrain_steps"]) > 0 and pre["seconds"] > 0
    assert (demo_dir / "data" / "mapillary" / "config_v2.0.json").is_file()
    assert info["curve"][0]["train_seconds"] > pre["seconds"]
    assert info["curve"][1]["giou"] == pytest.approx(trained["giou"], abs=1e-6)  # the export is the trained model
    gen = info["generate_metrics"]
    assert gen["protocol"] == "generate" and 0.0 <= gen["seg_rate"] <= 1.0
    # two example answers with overlays
    assert sorted(p.name for p in (demo_dir / "examples").iterdir()) == \
        ["example_0.png", "example_1.png", "example_image.png"]


def test_rerun_reuses_the_trained_model(demo_dir, monkeypatch, capsys):
    before = (demo_dir / "model" / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setenv(STEPS_ENV, str(SHORT_STEPS))
    assert demo_main(["--out", str(demo_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "reused the trained model" in out and "example 2:" in out
    assert (demo_dir / "model" / "model.safetensors").stat().st_mtime_ns == before


def test_demo_model_is_a_normal_model_folder(demo_dir, tmp_path):
    from lisa.evaluation.cli import main as eval_main

    image = demo_dir / "examples" / "example_image.png"
    r = subprocess.run([sys.executable, "-m", "lisa", "chat", "--version", str(demo_dir / "model"), "--image",
                        str(image), "--prompt", "Segment the red circle.", "--json", "--max_new_tokens", "12",
                        "--vis_save_path", str(tmp_path / "vis"), "--device", "cpu"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "text" in json.loads(r.stdout.strip().splitlines()[-1])
    assert eval_main(["--version", str(demo_dir / "model"), "--dataset_dir", str(demo_dir / "data"),
                      "--val_dataset", "ReasonSeg|val", "--log_base_dir", str(tmp_path), "--exp_name", "e"]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    demo = json.loads((demo_dir / "model" / DEMO_FILE).read_text())["metrics"]
    assert metrics["giou"] == pytest.approx(demo["giou"], abs=1e-6)
    assert metrics["ciou"] == pytest.approx(demo["ciou"], abs=1e-6)


def test_same_seed_same_model(tmp_path):
    small = {"n_train": 24, "n_refer": 24, "n_val": 8, "n_semantic": 12, "batch_size": 2}
    results = [run_demo(tmp_path / name, steps=3, progress=False, examples=False, evals=1, overrides=small)
               for name in ("a", "b")]
    assert results[0].metrics == results[1].metrics
    a = (tmp_path / "a" / "model" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "model" / "model.safetensors").read_bytes()
    other = run_demo(tmp_path / "c", steps=3, seed=1, progress=False, examples=False, evals=1, overrides=small)
    assert other.metrics != results[0].metrics


def test_bad_step_counts_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(STEPS_ENV, "many")
    assert demo_main(["--out", str(tmp_path)]) == 2
    assert STEPS_ENV in capsys.readouterr().err
    monkeypatch.delenv(STEPS_ENV)
    assert demo_main(["--out", str(tmp_path), "--steps", "10", "--evals", "3"]) == 2
    assert "cannot be split" in capsys.readouterr().err
