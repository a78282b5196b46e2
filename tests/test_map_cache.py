"""The GT cache (a safe .npz whatever the extension), MapTR's GT JSON and `lisa map gt-cache`'s errors."""

import json
import pickle
import zipfile

import numpy as np
import pytest

from helpers.map_trees import hand_map, write_tree
from lisa.map import spec
from lisa.map.errors import MapDataError
from lisa.map.gt import CAMERAS, GTBuildOptions, build_gt, read_cache, write_cache
from lisa.map.gt.cli import main as gt_main

POSES = [(1026.06, 1000.0, 0.0), (1040.0, 1001.0, 0.2), (1209.0, 1000.0, -0.1), (1070.0, 999.0, np.pi - 0.01)]


@pytest.fixture
def tree(tmp_path):
    write_tree(tmp_path, hand_map(), POSES)
    return tmp_path


def cli(tree, *extra):
    return gt_main(["--dataroot", str(tree), "--split", "train", "--split_file", str(tree / "split.json"),
                    "--no_progress", *extra])


def test_cache_round_trip_is_not_a_pickle(tree, tmp_path):
    out = tmp_path / "gt_cache_train.pkl"
    assert cli(tree, "--output", str(out)) == 0
    assert zipfile.is_zipfile(out)
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(out.read_bytes())
    with np.load(out, allow_pickle=False) as z:  # plain arrays only
        assert z["points"].dtype == np.float32
    cache = read_cache(out)
    built = build_gt(GTBuildOptions(str(tree), split_file=str(tree / "split.json"), progress=False))
    assert len(cache) == len(built) == len(POSES) and cache.header["split"] == "train"
    for a, b in zip(cache.samples, built):
        assert a.token == b.token and a.scene == b.scene and a.location == "boston-seaport"
        assert np.array_equal(a.labels, b.labels) and np.allclose(a.points, b.points, atol=1e-5)
        assert np.array_equal(a.closed, b.closed) and np.allclose(a.bboxes, b.bboxes, atol=1e-5)
        assert all(np.allclose(r1, r2, atol=1e-5) for r1, r2 in zip(a.raw, b.raw))
        assert np.allclose(a.lidar2global, b.lidar2global)
        assert [c.channel for c in a.cameras] == list(CAMERAS)
        for ca, cb in zip(a.cameras, b.cameras):
            assert ca.path == cb.path and (tree / ca.path).is_file() and (ca.width, ca.height) == (64, 36)
            assert np.allclose(ca.intrinsic, cb.intrinsic) and np.allclose(ca.lidar2img, cb.lidar2img)
    assert cache.by_token[built[2].token].closed.any()  # the island


def test_lidar2img_projects_the_camera_centre_direction(tree, tmp_path):
    cache = build_gt(GTBuildOptions(str(tree), split_file=str(tree / "split.json"), progress=False))
    front = cache[0].cameras[0]
    # a point 10 m straight ahead of the front camera lands on its principal point
    ahead = front.cam2lidar @ np.array([0.0, 0.0, 10.0, 1.0])
    uvw = front.lidar2img @ ahead
    assert uvw[:2] / uvw[2] == pytest.approx(front.intrinsic[:2, 2])


def test_maptr_gt_json(tree, tmp_path):
    out = tmp_path / "gt.json"
    assert cli(tree, "--output", str(out)) == 0
    doc = json.loads(out.read_text())
    built = build_gt(GTBuildOptions(str(tree), split_file=str(tree / "split.json"), progress=False))
    assert [g["sample_token"] for g in doc["GTs"]] == [s.token for s in built]
    for g, s in zip(doc["GTs"], built):
        assert len(g["vectors"]) == len(s)
        for v, lab, raw in zip(g["vectors"], s.labels, s.raw):
            assert v["cls_name"] == spec.CLASSES[lab] and v["type"] == lab and v["pts_num"] == len(raw)
            assert np.allclose(v["pts"], raw)
    with pytest.raises(MapDataError, match="not a lisa GT cache"):
        read_cache(out)


def test_workers_give_the_same_cache(tree, tmp_path):
    one = build_gt(GTBuildOptions(str(tree), split_file=str(tree / "split.json"), progress=False, workers=1))
    two = build_gt(GTBuildOptions(str(tree), split_file=str(tree / "split.json"), progress=False, workers=2,
                                  chunksize=1))
    assert [s.token for s in one] == [s.token for s in two]
    for a, b in zip(one, two):
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.points, b.points)


def test_a_pickle_is_refused(tmp_path):
    bad = tmp_path / "old.pkl"
    bad.write_bytes(pickle.dumps({"infos": []}))
    with pytest.raises(MapDataError, match="pickled caches are not read"):
        read_cache(bad)


def test_help_says_what_the_file_holds(capsys):
    with pytest.raises(SystemExit):
        gt_main(["--help"])
    text = capsys.readouterr().out
    assert "never a pickle" in text and "MapTR's evaluation-GT JSON" in text


@pytest.mark.parametrize("case, pattern", [
    ("dataroot", "does not exist or is not a folder"),
    ("version", r"no version folder .*v1.0-trainval"),
    ("expansion", r"map expansion .*boston-seaport.json is missing"),
    ("old_map", r"boston-seaport.json has version 1.2; 1.3 or newer is needed"),
    ("scene", r"scene 'scene-0999' of the split is not in .*scene.json"),
    ("official", r"official v1.0-mini 'train' split are not in .* --split_file \(this tree has .*split.json\)"),
    ("files", r"sample \w+ \(scene scene-0001\): 1 file\(s\) missing, first .*CAM_BACK.*jpg"),
])
def test_bad_inputs_are_clear_errors(tree, tmp_path, capsys, case, pattern):
    args = ["--dataroot", str(tree), "--split", "train", "--split_file", str(tree / "split.json")]
    if case == "dataroot":
        args[1] = str(tmp_path / "nowhere")
    elif case == "version":
        args += ["--version", "v1.0-trainval"]
    elif case == "expansion":
        (tree / "maps" / "expansion" / "boston-seaport.json").unlink()
    elif case == "old_map":
        path = tree / "maps" / "expansion" / "boston-seaport.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "version": "1.2"}))
    elif case == "scene":
        (tree / "split.json").write_text(json.dumps({"train": ["scene-0001", "scene-0999"]}))
    elif case == "official":
        args = args[:4]
    elif case == "files":
        next((tree / "samples" / "CAM_BACK").iterdir()).unlink()
    assert gt_main([*args, "--output", str(tmp_path / "c.npz"), "--no_progress"]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one clear line, no traceback
    with pytest.raises(MapDataError, match=pattern):
        version = args[args.index("--version") + 1] if "--version" in args else "v1.0-mini"
        split_file = args[5] if len(args) > 5 else None
        build_gt(GTBuildOptions(args[1], version=version, split_file=split_file, progress=False))


def test_skip_missing_leaves_those_samples_out(tree, tmp_path, capsys):
    next((tree / "samples" / "LIDAR_TOP").iterdir()).unlink()
    out = tmp_path / "c.npz"
    assert cli(tree, "--output", str(out), "--skip_missing") == 0
    assert len(read_cache(out)) == len(POSES) - 1
    assert "skipped 1 of 4 samples" in capsys.readouterr().err


def test_empty_cache_round_trip(tmp_path):
    write_cache(tmp_path / "e.npz", [])
    assert len(read_cache(tmp_path / "e.npz")) == 0
