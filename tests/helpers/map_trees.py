"""Hand-made map expansions and nuScenes trees for the map tests (exact control over every coordinate).

The road runs along global x at y = 1000 (10 m wide, two lanes, a road divider on the centre line with
nodes every 10 m), cut into two road segments at x = 1000; a crossing spans it at x 1040..1044; a bus
bay (a lane outside every road segment) bulges its south edge at x 1060..1080; a plaza with a traffic
island (a hole) sits at x 1200..1220. Distractor layers overlap all of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lisa.map.nuscenes.expansion import LOCATIONS, MapExpansion
from lisa.map.nuscenes.poses import yaw_quaternion
from lisa.map.synth import (
    MapBuilder,
    SamplePoses,
    SceneSpec,
    SensorSpec,
    empty_expansion,
    sensor_rig,
    write_expansion,
    write_placeholders,
    write_tables,
)

ROAD_Y = (995.0, 1005.0)
CROSSING_X = (1040.0, 1044.0)
BAY = [(1060.0, 995.0), (1064.0, 992.0), (1076.0, 992.0), (1080.0, 995.0)]
ISLAND = (1208.0, 998.0, 1212.0, 1002.0)
PLAZA = (1200.0, 990.0, 1220.0, 1010.0)


def rect(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def hand_map(distractors: bool = True, bus_bay: bool = True) -> dict:
    b = MapBuilder("hand", (3000.0, 3000.0))
    y0, y1 = ROAD_Y
    for x0, x1 in ((900.0, 1000.0), (1000.0, 1100.0)):
        b.add("road_segment", polygon_token=b.polygon(rect(x0, y0, x1, y1)), is_intersection=False,
              drivable_area_token="")
        for ly0, ly1 in ((y0, 1000.0), (1000.0, y1)):
            b.add("lane", polygon_token=b.polygon(rect(x0, ly0, x1, ly1)), lane_type="CAR", from_edge_line_token="",
                  to_edge_line_token="", left_lane_divider_segments=[], right_lane_divider_segments=[])
    b.add("road_divider", line_token=b.line([(x, 1000.0) for x in np.arange(900.0, 1101.0, 10.0)]),
          road_segment_token="")
    b.add("ped_crossing", polygon_token=b.polygon(rect(CROSSING_X[0], y0, CROSSING_X[1], y1)), road_segment_token="")
    if bus_bay:
        b.add("lane", polygon_token=b.polygon(BAY[::-1]), lane_type="CAR", from_edge_line_token="",
              to_edge_line_token="", left_lane_divider_segments=[], right_lane_divider_segments=[])
    b.add("road_segment", polygon_token=b.polygon(rect(*PLAZA), [rect(*ISLAND)[::-1]]), is_intersection=True,
          drivable_area_token="")
    if distractors:
        b.add("walkway", polygon_token=b.polygon(rect(900.0, y1, 1100.0, y1 + 3)))
        b.add("carpark_area", polygon_token=b.polygon(rect(1010.0, y1 + 3, 1030.0, y1 + 20)), orientation=0.0,
              road_block_token="")
        b.add("stop_line", polygon_token=b.polygon(rect(1038.0, y0, 1039.0, 1000.0)), stop_line_type="PED_CROSSING",
              ped_crossing_tokens=[], traffic_light_tokens=[], road_block_token="")
        b.add("lane_connector", polygon_token=b.polygon(rect(1090.0, 999.0, 1095.0, 1001.0)))
        b.add("drivable_area", polygon_tokens=[b.polygon(rect(899.0, y0 - 1, 1101.0, y1 + 1))])
    return b.build()


def geometry(data: dict, tmp_path: Path):
    """MapGeometry of an expansion dict (written to and read back from ``tmp_path``)."""
    from lisa.map.gt.geometry import MapGeometry

    write_expansion(tmp_path, "boston-seaport", data)
    return MapGeometry(MapExpansion.load(tmp_path, "boston-seaport"))


def lidar_pose(x: float, y: float, yaw: float) -> np.ndarray:
    """lidar2global of a sensor at (x, y, 1.8) turned by ``yaw`` radians."""
    from lisa.map.nuscenes.poses import transform_matrix

    return transform_matrix([x, y, 1.8], yaw_quaternion(yaw))


def write_tree(root: Path, data: dict, poses: list[tuple[float, float, float]], camera_shift: float = 0.5,
               version: str = "v1.0-mini", scene: str = "scene-0001") -> list[str]:
    """A tree with one scene whose LIDAR_TOP (identity calibration rotation, at (0.94, 0, 1.84) on the car)
    has ego poses (x, y, yaw) = ``poses``; cameras get ego poses ``camera_shift`` m further along x.
    Writes ``split.json`` ({"train": [scene], "val": [scene]}) and placeholder files; returns sample tokens."""
    for location in LOCATIONS:
        write_expansion(root, location, data if location == "boston-seaport" else empty_expansion())
    rig = [SensorSpec("LIDAR_TOP", "lidar", [0.94, 0.0, 1.84], [1.0, 0.0, 0.0, 0.0], [])]
    rig += [s for s in sensor_rig(np.random.default_rng(0), 64, 36, jitter=False) if s.modality == "camera"]
    samples = []
    for k, (x, y, yaw) in enumerate(poses):
        stamp = 1_000_000 + 500_000 * k
        ego = {s.channel: ([x + (camera_shift if s.modality == "camera" else 0.0), y, 0.0],
                           yaw_quaternion(yaw).tolist(), stamp) for s in rig}
        samples.append(SamplePoses(stamp, ego))
    index = write_tables(root, version, [SceneSpec(scene, "boston-seaport", rig, samples)])
    write_placeholders(root, index)
    (root / "split.json").write_text(json.dumps({"train": [scene], "val": [scene]}))
    return index.sample_tokens[0]
