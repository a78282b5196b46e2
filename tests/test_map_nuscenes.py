"""Reading nuScenes trees: official splits, table and map-expansion checks, poses."""

import json

import numpy as np
import pytest

from helpers.map_trees import hand_map, write_tree
from lisa.map.errors import MapDataError
from lisa.map.nuscenes.expansion import MapExpansion, expansion_path
from lisa.map.nuscenes.poses import (
    invert,
    matrix_quaternion,
    quaternion_matrix,
    transform_matrix,
    yaw_of,
    yaw_quaternion,
)
from lisa.map.nuscenes.splits import official_split, split_scenes
from lisa.map.nuscenes.tables import NuScenesTree


def test_official_split_sizes_and_membership():
    train, val = official_split("train"), official_split("val")
    assert (len(train), len(val)) == (700, 150) and not set(train) & set(val)
    assert len(set(train)) == 700 and train[0] == "scene-0001" and val[-1] == "scene-1073"
    assert split_scenes("v1.0-mini", "train") == ["scene-0061", "scene-0553", "scene-0655", "scene-0757",
                                                  "scene-0796", "scene-1077", "scene-1094", "scene-1100"]
    assert split_scenes("v1.0-mini", "val") == ["scene-0103", "scene-0916"]
    assert split_scenes("v1.0-trainval", "val") == val
    with pytest.raises(MapDataError, match="--split_file"):
        split_scenes("v1.0-test", "test")


def test_split_file_errors(tmp_path):
    f = tmp_path / "split.json"
    f.write_text(json.dumps({"train": ["a", "b"], "val": "c"}))
    with pytest.raises(MapDataError, match="'val' must be a list"):
        split_scenes("v1.0-mini", "train", f)
    f.write_text(json.dumps({"train": ["a"]}))
    assert split_scenes("v1.0-mini", "train", f) == ["a"]
    with pytest.raises(MapDataError, match="no split 'val'"):
        split_scenes("v1.0-mini", "val", f)
    with pytest.raises(MapDataError, match="does not exist"):
        split_scenes("v1.0-mini", "val", tmp_path / "nope.json")


def test_tree_reads_and_links_key_frames(tmp_path):
    tokens = write_tree(tmp_path, hand_map(), [(1000.0, 1000.0, 0.0), (1005.0, 1000.0, 0.0)])
    tree = NuScenesTree(tmp_path, "v1.0-mini")
    scene = tree.scene_by_name["scene-0001"]
    samples = tree.scene_samples(scene)
    assert [s["token"] for s in samples] == tokens
    assert set(samples[0]["data"]) == {"LIDAR_TOP", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK",
                                       "CAM_BACK_LEFT", "CAM_BACK_RIGHT"}
    assert tree.location(scene) == "boston-seaport"


def test_tree_errors_name_the_path(tmp_path):
    with pytest.raises(MapDataError, match="does not exist"):
        NuScenesTree(tmp_path / "missing", "v1.0-mini")
    write_tree(tmp_path, hand_map(), [(1000.0, 1000.0, 0.0)])
    with pytest.raises(MapDataError, match=r"no version folder .*v1.0-trainval.*found under .*: v1.0-mini"):
        NuScenesTree(tmp_path, "v1.0-trainval")
    (tmp_path / "v1.0-mini" / "visibility.json").unlink()
    with pytest.raises(MapDataError, match=r"visibility.json is missing"):
        NuScenesTree(tmp_path, "v1.0-mini")


def test_broken_reference_and_unmapped_log_are_errors(tmp_path):
    write_tree(tmp_path, hand_map(), [(1000.0, 1000.0, 0.0)])
    table = tmp_path / "v1.0-mini" / "sample_data.json"
    records = json.loads(table.read_text())
    records[0]["ego_pose_token"] = "f" * 32
    table.write_text(json.dumps(records))
    with pytest.raises(MapDataError, match=r"sample_data.json: record .* refers to ego_pose_token 'f+'"):
        NuScenesTree(tmp_path, "v1.0-mini")


def test_map_expansion_checks(tmp_path):
    write_tree(tmp_path, hand_map(), [(1000.0, 1000.0, 0.0)])
    assert MapExpansion.load(tmp_path, "boston-seaport").version == "1.3"
    path = expansion_path(tmp_path, "singapore-onenorth")
    data = json.loads(path.read_text())
    data["version"] = "1.2"
    path.write_text(json.dumps(data))
    with pytest.raises(MapDataError, match=r"singapore-onenorth.json has version 1.2; 1.3 or newer"):
        MapExpansion.load(tmp_path, "singapore-onenorth")
    data["version"] = "1.10"  # newer, compared as numbers
    del data["lane_connector"]
    path.write_text(json.dumps(data))
    with pytest.raises(MapDataError, match="lacks the layers lane_connector"):
        MapExpansion.load(tmp_path, "singapore-onenorth")
    path.unlink()
    with pytest.raises(MapDataError, match=r"map expansion .*singapore-onenorth.json is missing"):
        MapExpansion.load(tmp_path, "singapore-onenorth")
    with pytest.raises(MapDataError, match="unknown map location"):
        MapExpansion.load(tmp_path, "paris")


def test_poses():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        r = quaternion_matrix(q)
        assert np.allclose(r @ r.T, np.eye(3)) and np.linalg.det(r) == pytest.approx(1.0)
        assert np.allclose(quaternion_matrix(matrix_quaternion(r)), r)
    for yaw in (0.0, 0.5, -2.0, np.pi - 1e-6):
        assert yaw_of(quaternion_matrix(yaw_quaternion(yaw, 0.01, -0.02))) == pytest.approx(yaw, abs=1e-9)
    m = transform_matrix([1, 2, 3], yaw_quaternion(0.7, 0.1, 0.2))
    assert np.allclose(invert(m) @ m, np.eye(4))
    # the nuScenes LiDAR mount (yaw -90 deg) on a car heading +90 deg: the sensor x axis points along +x
    ego2global = transform_matrix([0, 0, 0], yaw_quaternion(np.pi / 2))
    lidar2global = ego2global @ transform_matrix([0.9, 0, 1.8], yaw_quaternion(-np.pi / 2))
    assert yaw_of(lidar2global) == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(lidar2global[:3, 3], [0.0, 0.9, 1.8])
