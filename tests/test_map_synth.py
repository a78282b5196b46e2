"""The synthetic nuScenes tree: a real tree, a town whose GT has every hard case, images that show the map."""

import json

import numpy as np
import pytest
from PIL import Image
from shapely.geometry import LinearRing, LineString, Polygon

from lisa.map import spec
from lisa.map.evaluation.cli import main as eval_main
from lisa.map.gt import GTBuildOptions, MapGeometry, build_gt, extract_vectors, read_cache
from lisa.map.gt.cli import main as gt_main
from lisa.map.nuscenes.expansion import LOCATIONS, MapExpansion
from lisa.map.nuscenes.poses import transform_matrix, yaw_quaternion
from lisa.map.nuscenes.tables import NuScenesTree
from lisa.map.synth import SynthOptions, build_town, write_expansion, write_synthetic_tree
from lisa.map.synth.cli import main as synth_main
from lisa.map.viz.cli import main as show_main

BND, PED = spec.CLASS_INDEX["boundary"], spec.CLASS_INDEX["ped_crossing"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    split = write_synthetic_tree(SynthOptions(str(root), scenes=3, samples_per_scene=3, image_size=(160, 90),
                                              progress=False))
    return root, split


@pytest.fixture(scope="module")
def town(tmp_path_factory):
    root = tmp_path_factory.mktemp("town")
    write_expansion(root, "boston-seaport", build_town().builder.build())
    return MapGeometry(MapExpansion.load(root, "boston-seaport"))


def to_global(vectors, lidar2global):
    c, yaw = lidar2global[:2, 3], np.arctan2(lidar2global[1, 0], lidar2global[0, 0])
    rot = np.array([[np.cos(yaw), np.sin(yaw)], [-np.sin(yaw), np.cos(yaw)]])
    return [(cls, pts @ rot + c) for cls, pts in vectors]


def test_tree_is_complete_and_readable(tree):
    root, split = tree
    assert split == json.loads((root / "split.json").read_text()) == {"train": ["scene-0001", "scene-0002"],
                                                                       "val": ["scene-0003"]}
    nusc = NuScenesTree(root, "v1.0-mini")
    for location in LOCATIONS:
        MapExpansion.load(root, location)
    prior = Image.open(root / nusc.tables["map"][0]["filename"])
    assert prior.size == (4600, 4000) and prior.getextrema() == (0, 255)
    for sample in nusc.tables["sample"]:
        poses = {}
        for channel, token in sample["data"].items():
            sd = nusc.get("sample_data", token)
            assert (root / sd["filename"]).is_file()
            if channel.startswith("CAM"):
                assert Image.open(root / sd["filename"]).size == (160, 90)
            poses[channel] = np.array(nusc.get("ego_pose", sd["ego_pose_token"])["translation"])
        # every sensor has its own ego pose: the car moves between the camera exposures
        assert len({tuple(p) for p in poses.values()}) == 7
        assert 0.005 < np.linalg.norm(poses["CAM_BACK_RIGHT"] - poses["LIDAR_TOP"]) < 0.5


def test_gt_cache_and_perfect_predictions_end_to_end(tree, tmp_path):
    root, _ = tree
    cache, gt_json = tmp_path / "gt_val.pkl", tmp_path / "gt_val.json"
    for out in (cache, gt_json):
        assert gt_main(["--dataroot", str(root), "--split", "val", "--split_file", str(root / "split.json"),
                        "--output", str(out), "--no_progress"]) == 0
    samples = read_cache(cache).samples
    assert len(samples) == 3 and all(len(s) > 0 for s in samples)
    for s in samples:  # no slivers from the union: every boundary piece is a real edge
        assert all(LineString(r).length > 1.0 for lab, r in zip(s.labels, s.raw) if lab == BND)
    preds = {"results": {s.token: {"vectors": [{"pts": r.tolist(), "cls_name": spec.CLASSES[lab],
                                                 "confidence_level": 1.0} for lab, r in zip(s.labels, s.points)]}
                         for s in samples}}
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    for gt in (cache, gt_json):
        out = tmp_path / "m.json"
        assert eval_main(["--gt", str(gt), "--predictions", str(tmp_path / "pred.json"), "--output", str(out)]) == 0
        assert json.loads(out.read_text())["mAP"] == pytest.approx(1.0)
    png = tmp_path / "bev.png"
    assert show_main(["--dataroot", str(root), "--sample", samples[0].token, "--out", str(png),
                      "--predictions", str(tmp_path / "pred.json")]) == 0
    assert Image.open(png).size[0] > 700


def test_camera_images_show_the_map_where_the_calibration_says(tree):
    root, _ = tree
    samples = build_gt(GTBuildOptions(str(root), split="train", split_file=str(root / "split.json"), progress=False))
    hits = bright = 0
    for s in samples:
        for cam in s.cameras:
            img = np.asarray(Image.open(root / cam.path).convert("L"), dtype=np.float64)
            for lab, pts in zip(s.labels, s.raw):
                if lab != BND:  # dividers are dashed and crossings striped: the kerbs are bright all along
                    continue
                line = LineString(pts)
                for d in np.linspace(0, line.length, 25):
                    x, y = line.interpolate(d).coords[0]
                    uvw = cam.lidar2img @ np.array([x, y, -1.84, 1.0])  # the ground is 1.84 m under the sensor
                    if uvw[2] < 4.0 or uvw[2] > 12.0:
                        continue
                    u, v = (uvw[:2] / uvw[2]).astype(int)
                    if 1 <= u < cam.width - 1 and 1 <= v < cam.height - 1:
                        hits += 1
                        bright += img[v - 1:v + 2, u - 1:u + 2].max() > 110  # kerb or walkway, not road

    assert hits > 50 and bright / hits > 0.95


def test_town_island_is_a_closed_ring(town):
    pose = transform_matrix([151.8, 195.0, 1.8], yaw_quaternion(0.0))  # on V0 beside the median island
    vectors = to_global(extract_vectors(town, pose), pose)
    rings = [pts for cls, pts in vectors if cls == BND and np.all(pts[0] == pts[-1])]
    (island,) = rings
    assert Polygon(island).area == pytest.approx(1.2 * 26.0) and LinearRing(island[:-1]).is_ccw


def test_town_bus_bay_bulges_the_boundary(town):
    pose = transform_matrix([234.0, 128.2, 1.8], yaw_quaternion(-np.pi / 2))  # driving east on H0, facing +x
    lines = [LineString(pts) for cls, pts in to_global(extract_vectors(town, pose), pose) if cls == BND]
    assert any(line.buffer(1e-6).contains(LineString([(218.0, 119.5), (250.0, 119.5)])) for line in lines)
    assert min(line.distance(LineString([(215.0, 123.0), (253.0, 123.0)]).interpolate(0.5, normalized=True))
               for line in lines) > 1.0


def test_town_intersection_crossings_are_closed_rings(town):
    pose = transform_matrix([150.0, 130.0, 1.8], yaw_quaternion(0.0))  # the centre of H0 x V0
    rings = [pts for cls, pts in extract_vectors(town, pose) if cls == PED]
    assert len(rings) == 4 and all(np.all(r[0] == r[-1]) for r in rings)
    assert sorted(round(Polygon(r).area, 6) for r in rings) == [56.0] * 4  # 4 m x 14 m


def test_synth_cli(tmp_path, capsys):
    assert synth_main(["--out", str(tmp_path / "d"), "--scenes", "1", "--samples_per_scene", "1",
                       "--image_size", "48x27", "--no_progress"]) == 0
    assert json.loads((tmp_path / "d" / "split.json").read_text()) == {"train": ["scene-0001"], "val": []}
    with pytest.raises(SystemExit):
        synth_main(["--out", str(tmp_path / "e"), "--image_size", "big"])
