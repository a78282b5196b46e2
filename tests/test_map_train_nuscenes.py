"""The detector on a real (synthetic) nuScenes tree: the data set over the GT cache (built on the fly),
``lisa map train`` from --dataroot, ``lisa map eval --checkpoint``, ``lisa map predict``, the demo."""

import json

import pytest

from helpers.threads import one_torch_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def town(tmp_path_factory):
    from lisa.map.synth import SynthOptions, write_synthetic_tree

    root = tmp_path_factory.mktemp("town")
    write_synthetic_tree(SynthOptions(str(root), scenes=3, samples_per_scene=3, val_fraction=0.34,
                                      image_size=(96, 54), progress=False))
    return root


def test_dataset_reads_the_gt_cache_built_on_the_fly(town, tmp_path, capsys):
    from lisa.map.data.nuscenes import NuScenesMapDataset
    from lisa.map.inference.gt_cache import gt_cache_path, load_or_build_gt
    from lisa.map.model.config import CAMERAS

    split = str(town / "split.json")
    cache = load_or_build_gt(town, "v1.0-mini", "train", split, cache_dir=str(tmp_path), progress=False)
    assert "building it" in capsys.readouterr().out
    assert gt_cache_path(town, "v1.0-mini", "train", split, str(tmp_path)).is_file()
    load_or_build_gt(town, "v1.0-mini", "train", split, cache_dir=str(tmp_path), progress=False)
    assert "building" not in capsys.readouterr().out  # the second time it is read
    ds = NuScenesMapDataset(town, cache.samples, 64, CAMERAS)
    item = ds[0]
    assert item["images"].shape == (6, 3, 64, 64)
    assert len(item["targets"]) == len(cache.samples[0]) > 0
    assert [p.parent.name for p in ds.image_paths(0)] == list(CAMERAS)


def test_train_from_dataroot_then_eval_and_predict(town, tmp_path):
    from PIL import Image

    from lisa.map.cli import main as map_main
    from lisa.map.gt import read_cache

    run_dir = tmp_path / "run"
    argv = ["train", "--dataroot", str(town), "--version", "v1.0-mini", "--split_file", str(town / "split.json"),
            "--preset", "tiny", "--batch_size", "2", "--epochs", "1", "--num_workers", "0", "--warmup_steps", "1",
            "--output_dir", str(run_dir), "--no_progress", "--gt_cache_dir", str(tmp_path / "gt")]
    assert map_main(argv) == 0
    assert (run_dir / "best_model" / "model.safetensors").is_file()
    val = json.loads((run_dir / "val_log.jsonl").read_text().splitlines()[0])
    assert 0.0 <= val["mAP"] <= 1.0 and set(val["class_ap"]) == {"divider", "ped_crossing", "boundary"}

    results, metrics = tmp_path / "results.json", tmp_path / "metrics.json"
    assert map_main(["eval", "--checkpoint", str(run_dir / "final_model"), "--dataroot", str(town), "--version",
                     "v1.0-mini", "--split", "val", "--split_file", str(town / "split.json"), "--gt_cache_dir",
                     str(tmp_path / "gt"), "--predictions", str(results), "--output", str(metrics)]) == 0
    doc = json.loads(results.read_text())
    val_tokens = [s.token for s in read_cache(next((tmp_path / "gt").glob("*_val_*.npz"))).samples]
    assert sorted(doc["results"]) == sorted(val_tokens)
    assert all(len(v["vectors"]) == 50 for v in doc["results"].values())
    assert json.loads(metrics.read_text())["mAP"] == pytest.approx(val["mAP"], abs=1e-9)  # same weights, same images

    out = tmp_path / "bev.png"
    assert map_main(["predict", "--checkpoint", str(run_dir / "final_model"), "--dataroot", str(town), "--version",
                     "v1.0-mini", "--sample", val_tokens[0], "--out", str(out), "--score_threshold", "0"]) == 0
    assert Image.open(out).size[0] > 200
    assert map_main(["predict", "--checkpoint", str(run_dir / "final_model"), "--dataroot", str(town), "--version",
                     "v1.0-mini", "--sample", "nope", "--out", str(out)]) == 2


def test_train_reports_a_wrong_dataroot(tmp_path, capsys):
    from lisa.map.cli import main as map_main

    code = map_main(["train", "--dataroot", str(tmp_path / "nowhere"), "--version", "v1.0-mini", "--preset", "tiny",
                     "--output_dir", str(tmp_path / "run"), "--no_progress"])
    assert code == 2
    assert "nowhere" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_learns_beats_the_baselines_and_reuses_its_model(tmp_path):
    from lisa.map.demo.run import run_map_demo

    small = dict(scenes=3, samples_per_scene=6, image_size=(96, 54), steps=100, batch_size=4, evals=2)
    first = run_map_demo(tmp_path, overrides=small, progress=False)
    assert first.trained and first.curve and first.curve_png.is_file() and first.example_png.is_file()
    assert first.metrics["mAP"] > first.untrained["mAP"]
    again = run_map_demo(tmp_path, overrides=small, progress=False)
    assert not again.trained and again.metrics["mAP"] == pytest.approx(first.metrics["mAP"])
