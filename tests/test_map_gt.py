"""Map GT per sample (MapTR's protocol) on hand-made maps whose answer can be worked out by hand."""

import numpy as np
import pytest
from shapely.geometry import LinearRing, LineString, Polygon, box

from helpers.map_trees import BAY, CROSSING_X, ISLAND, ROAD_Y, geometry, hand_map, lidar_pose, write_tree
from lisa.map import spec
from lisa.map.gt import GTBuildOptions, build_gt, extract_vectors
from lisa.map.gt.geometry import BOUNDARY_MARGIN

DIV, PED, BND = (spec.CLASS_INDEX[c] for c in spec.CLASSES)


def of_class(vectors, cls):
    return [pts for c, pts in vectors if c == cls]


def same_line(a, b, tol=1e-9):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and (np.abs(a - b).max() <= tol or np.abs(a[::-1] - b).max() <= tol)


def test_yaw_exactly_zero_is_a_translation_of_the_map(tmp_path):
    # LIDAR_TOP's ego pose puts the sensor at (1030, 1000); the cameras' own ego poses are 0.5 m away
    tokens = write_tree(tmp_path, hand_map(), [(1029.06, 1000.0, 0.0)])
    (gt,) = build_gt(GTBuildOptions(str(tmp_path), split="train", split_file=str(tmp_path / "split.json"),
                                    progress=False))
    assert gt.token == tokens[0]
    centre = np.array([1030.0, 1000.0])
    assert np.allclose(gt.lidar2global[:2, 3], centre) and np.allclose(gt.lidar2global[:3, :3], np.eye(3))
    patch = box(1015.0, 970.0, 1045.0, 1030.0)
    divider = np.asarray(LineString([(x, 1000.0) for x in range(900, 1101, 10)]).intersection(patch).coords)
    (got,) = [r for lab, r in zip(gt.labels, gt.raw) if lab == DIV]
    assert same_line(got, divider - centre)  # -15, -10, 0, 10, 15 along x at y = 0
    assert np.allclose(sorted(got[:, 0]), [-15, -10, 0, 10, 15])
    # the crossing (1040..1044 x 995..1005) is whole: a closed ring of the 4 x 10 m rectangle
    (ring,) = [r for lab, r in zip(gt.labels, gt.raw) if lab == PED]
    assert np.all(ring[0] == ring[-1]) and Polygon(ring).area == pytest.approx(40.0)
    assert Polygon(ring).equals(box(CROSSING_X[0] - 1030, ROAD_Y[0] - 1000, CROSSING_X[1] - 1030, ROAD_Y[1] - 1000))
    # two road edges at y = -5 and +5, cut 0.2 m inside the range
    edges = [r for lab, r in zip(gt.labels, gt.raw) if lab == BND]
    assert len(edges) == 2
    assert sorted(float(e[:, 1].mean()) for e in edges) == pytest.approx([-5.0, 5.0])
    for e in edges:
        assert sorted(e[[0, -1], 0]) == pytest.approx([-15 + BOUNDARY_MARGIN, 15 - BOUNDARY_MARGIN])


def test_gt_uses_the_lidar_ego_pose_not_a_camera_pose(tmp_path):
    write_tree(tmp_path, hand_map(), [(1029.06, 1000.0, 0.0)], camera_shift=0.0)
    same = build_gt(GTBuildOptions(str(tmp_path), split_file=str(tmp_path / "split.json"), progress=False))[0]
    other = tmp_path / "shifted"
    write_tree(other, hand_map(), [(1029.06, 1000.0, 0.0)], camera_shift=0.7)
    shifted = build_gt(GTBuildOptions(str(other), split_file=str(other / "split.json"), progress=False))[0]
    assert np.array_equal(same.points, shifted.points)
    # the camera's transform into the LiDAR frame carries the 0.7 m between the two ego poses
    assert shifted.cameras[0].cam2lidar[0, 3] - same.cameras[0].cam2lidar[0, 3] == pytest.approx(0.7)


@pytest.mark.parametrize("yaw", [np.pi - 1e-7, -np.pi + 1e-7, np.pi])
def test_yaw_near_180_degrees_turns_the_map_around(tmp_path, yaw):
    geom = geometry(hand_map(), tmp_path)
    centre = np.array([1030.0, 1002.0])
    vectors = extract_vectors(geom, lidar_pose(*centre, yaw))
    (div,) = of_class(vectors, DIV)
    expected = -(np.asarray(LineString([(x, 1000.0) for x in range(900, 1101, 10)])
                            .intersection(box(1015, 972, 1045, 1032)).coords) - centre)
    assert same_line(div, expected, tol=1e-4)
    assert np.allclose(div[:, 1], 2.0, atol=1e-4)  # the divider is 2 m south of the sensor: +2 m when facing west


def test_yaw_quarter_turn_puts_the_road_along_the_sensor_y_axis(tmp_path):
    geom = geometry(hand_map(), tmp_path)
    # sensor x axis pointing north (+y): the road (along global x) runs along the sensor's -y .. +y axis
    vectors = extract_vectors(geom, lidar_pose(1030.0, 1000.0, np.pi / 2))
    (div,) = of_class(vectors, DIV)
    assert np.allclose(div[:, 0], 0.0, atol=1e-9) and sorted(div[[0, -1], 1]) == pytest.approx([-30, 30])


def test_crossing_cut_by_the_patch_edge_stays_a_closed_ring(tmp_path):
    geom = geometry(hand_map(), tmp_path)
    # the range's right edge (x = +15) passes through the crossing at global x = 1042
    vectors = extract_vectors(geom, lidar_pose(1027.0, 1000.0, 0.0))
    (ring,) = of_class(vectors, PED)
    assert np.all(ring[0] == ring[-1])
    assert ring[:, 0].max() == pytest.approx(15.0)  # the cut edge along the patch edge is kept
    assert Polygon(ring).area == pytest.approx(2.0 * 10.0)
    assert LinearRing(ring[:-1]).is_ccw is False  # exterior rings run clockwise


def test_island_is_a_closed_counter_clockwise_boundary_ring(tmp_path):
    geom = geometry(hand_map(), tmp_path)
    vectors = extract_vectors(geom, lidar_pose(1210.0, 1000.0, 0.0))
    rings = [r for r in of_class(vectors, BND) if np.all(r[0] == r[-1])]
    assert len(rings) == 2  # the plaza (20 x 20 m, fully inside) and its island
    island = min(rings, key=lambda r: Polygon(r).area)
    assert Polygon(island).area == pytest.approx(16.0)
    assert np.allclose(island.min(0), [ISLAND[0] - 1210, ISLAND[1] - 1000])
    assert LinearRing(island[:-1]).is_ccw
    plaza = max(rings, key=lambda r: Polygon(r).area)
    assert not LinearRing(plaza[:-1]).is_ccw and Polygon(plaza).area == pytest.approx(400.0)


def test_bus_bay_bulges_the_boundary(tmp_path):
    centre = np.array([1070.0, 1000.0])
    with_bay = of_class(extract_vectors(geometry(hand_map(), tmp_path), lidar_pose(*centre, 0.0)), BND)
    no_bay = geometry(hand_map(bus_bay=False), tmp_path / "b")
    without = of_class(extract_vectors(no_bay, lidar_pose(*centre, 0.0)), BND)
    lines = [LineString(r) for r in with_bay]
    bay_floor = LineString(np.array(BAY[1:3]) - centre)  # the bay's outer edge, 8 m south of the centre
    assert any(line.buffer(1e-6).contains(bay_floor) for line in lines)
    covered = LineString(np.array([BAY[0], BAY[-1]]) - centre).interpolate(0.5, normalized=True)  # road edge in the bay
    assert min(line.distance(covered) for line in lines) > 1.0
    assert min(float(r[:, 1].min()) for r in with_bay) == pytest.approx(-8.0)
    assert min(float(r[:, 1].min()) for r in without) == pytest.approx(-5.0)


def test_distractor_layers_are_not_ground_truth(tmp_path):
    pose = lidar_pose(1031.0, 1001.0, 0.3)
    with_d = extract_vectors(geometry(hand_map(distractors=True), tmp_path), pose)
    without = extract_vectors(geometry(hand_map(distractors=False), tmp_path / "b"), pose)
    assert len(with_d) == len(without)
    # the same curves; distractor corners that lie on road edges may add collinear vertices (shared nodes)
    for (c1, a), (c2, b) in zip(with_d, without):
        assert c1 == c2 and LineString(a).hausdorff_distance(LineString(b)) < 1e-9


def test_adjacent_segments_sharing_vertices_leave_no_slivers(tmp_path):
    # the sensor sits on the joint of the two road segments (x = 1000) and their four lanes
    vectors = extract_vectors(geometry(hand_map(), tmp_path), lidar_pose(1000.0, 1000.0, 0.2))
    edges = of_class(vectors, BND)
    assert len(edges) == 2 and all(LineString(e).length > 20 for e in edges)


def test_resampled_instances_are_clamped_and_keep_rings_closed(tmp_path):
    write_tree(tmp_path, hand_map(), [(1026.06, 1000.0, 0.0), (1209.06, 1001.0, 0.1)])
    for s in build_gt(GTBuildOptions(str(tmp_path), split_file=str(tmp_path / "split.json"), progress=False)):
        assert s.points.shape[1:] == (spec.NUM_POINTS, 2)
        assert np.all(s.points[..., 0] >= -15) and np.all(s.points[..., 0] <= 15)
        assert np.all(s.points[..., 1] >= -30) and np.all(s.points[..., 1] <= 30)
        for inst in s.instances:
            assert inst.closed == bool(np.all(inst.points[0] == inst.points[-1]))
            assert inst.length == pytest.approx(LineString(inst.raw).length, rel=1e-5)
            assert len(inst.orders()) == spec.num_orders(spec.NUM_POINTS, inst.closed)
        assert s.closed.any()
