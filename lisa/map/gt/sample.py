"""What the GT cache holds per sample: where the sensors were, the camera files, and the map instances.

:class:`SampleFrame` is read from the nuScenes tables once (poses, calibrations, file paths relative to the
dataroot); :class:`SampleGT` adds the map instances as arrays, so a data loader never reads the tables:

- ``labels [M]`` class indices (``spec.CLASSES``), ``points [M, 20, 2]`` resampled, clamped to the range,
  ``closed [M]``, ``lengths [M]`` and ``bboxes [M, 4]`` (x_min, y_min, x_max, y_max, clamped to the range)
  of the raw polylines, and ``raw`` (one ``[N, 2]`` array per instance: the unresampled geometry that the
  evaluation uses). All in metres, LiDAR frame (x right, y forward).
- ``cameras``: the six cameras in ``CAMERAS`` order with image path, size, intrinsics, ``cam2lidar`` and
  ``lidar2img``. Each camera's own ego pose is used (cameras fire at slightly different times).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from shapely.geometry import LineString

from lisa.map import spec
from lisa.map.errors import MapDataError
from lisa.map.nuscenes.poses import invert, transform_matrix
from lisa.map.nuscenes.tables import NuScenesTree

LIDAR = "LIDAR_TOP"
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")


@dataclass
class CameraInfo:
    channel: str
    path: str  # image file, relative to the dataroot
    width: int
    height: int
    intrinsic: np.ndarray  # [3, 3]
    cam2lidar: np.ndarray  # [4, 4]: camera points -> this sample's LiDAR frame
    timestamp: int = 0

    @property
    def lidar2cam(self) -> np.ndarray:
        return invert(self.cam2lidar)

    @property
    def lidar2img(self) -> np.ndarray:
        """[4, 4]: LiDAR points (homogeneous) -> pixel coordinates times depth."""
        k = np.eye(4)
        k[:3, :3] = self.intrinsic
        return k @ self.lidar2cam


@dataclass
class SampleFrame:
    token: str
    scene: str
    location: str
    timestamp: int
    lidar_path: str  # relative to the dataroot
    lidar2ego: np.ndarray  # [4, 4]
    ego2global: np.ndarray  # [4, 4], LIDAR_TOP's own ego pose
    cameras: list[CameraInfo]

    @property
    def lidar2global(self) -> np.ndarray:
        return self.ego2global @ self.lidar2ego

    def files(self) -> list[str]:
        return [self.lidar_path, *(c.path for c in self.cameras)]


@dataclass
class MapInstance:
    """One instance, as a training target: 20 points, closed flag and the raw polyline."""

    label: int
    points: np.ndarray  # [20, 2]
    raw: np.ndarray  # [N, 2]
    closed: bool
    length: float
    bbox: np.ndarray  # [4]

    @property
    def cls(self) -> str:
        return spec.CLASSES[self.label]

    def orders(self) -> np.ndarray:
        """Permutation-equivalent point orders ``[K, 20, 2]`` for matching (``spec.equivalent_orders``)."""
        return spec.equivalent_orders(self.points, self.closed)


@dataclass
class SampleGT(SampleFrame):
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, spec.NUM_POINTS, 2), np.float32))
    closed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    bboxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    raw: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def instances(self) -> list[MapInstance]:
        return [MapInstance(int(self.labels[i]), self.points[i], self.raw[i], bool(self.closed[i]),
                            float(self.lengths[i]), self.bboxes[i]) for i in range(len(self))]


def sample_frame(tree: NuScenesTree, sample: dict, scene: dict) -> SampleFrame:
    """Poses, calibrations and file paths of one sample, from the tables."""
    data = sample["data"]
    missing = [c for c in (LIDAR, *CAMERAS) if c not in data]
    if missing:
        raise MapDataError(f"sample {sample['token']} (scene {scene['name']}) has no key-frame sample_data for "
                           f"{', '.join(missing)}")

    def pose(channel: str) -> tuple[dict, np.ndarray, np.ndarray]:
        sd = tree.get("sample_data", data[channel])
        cs = tree.get("calibrated_sensor", sd["calibrated_sensor_token"])
        ego = tree.get("ego_pose", sd["ego_pose_token"])
        return (sd, transform_matrix(cs["translation"], cs["rotation"]),
                transform_matrix(ego["translation"], ego["rotation"]))

    lidar_sd, lidar2ego, ego2global = pose(LIDAR)
    global2lidar = invert(ego2global @ lidar2ego)
    cameras = []
    for channel in CAMERAS:
        sd, cam2ego, cam_ego2global = pose(channel)
        cs = tree.get("calibrated_sensor", sd["calibrated_sensor_token"])
        intrinsic = np.asarray(cs.get("camera_intrinsic") or [], dtype=np.float64)
        if intrinsic.shape != (3, 3):
            raise MapDataError(f"calibrated_sensor {cs['token']} ({channel}) needs a 3x3 camera_intrinsic")
        cameras.append(CameraInfo(channel, sd["filename"], int(sd.get("width", 0)), int(sd.get("height", 0)),
                                  intrinsic, global2lidar @ cam_ego2global @ cam2ego, int(sd["timestamp"])))
    return SampleFrame(sample["token"], scene["name"], tree.location(scene), int(sample["timestamp"]),
                       lidar_sd["filename"], lidar2ego, ego2global, cameras)


def check_files(frame: SampleFrame, dataroot: str | Path) -> list[Path]:
    """The sample's LiDAR and camera files that do not exist under ``dataroot``."""
    return [Path(dataroot) / f for f in frame.files() if not (Path(dataroot) / f).is_file()]


def make_sample_gt(frame: SampleFrame, vectors: list[tuple[int, np.ndarray]]) -> SampleGT:
    """Resample raw vectors to ``spec.NUM_POINTS`` points and measure them."""
    n = len(vectors)
    points = np.zeros((n, spec.NUM_POINTS, 2), np.float32)
    lengths = np.zeros(n, np.float32)
    bboxes = np.zeros((n, 4), np.float32)
    closed = np.zeros(n, bool)
    raw = []
    for i, (_, pts) in enumerate(vectors):
        pts = np.asarray(pts, dtype=np.float64)
        closed[i] = len(pts) > 2 and bool(np.all(pts[0] == pts[-1]))
        points[i] = spec.clamp_to_range(spec.resample(pts, spec.NUM_POINTS))
        lengths[i] = LineString(pts).length
        lo, hi = spec.clamp_to_range(pts.min(0)), spec.clamp_to_range(pts.max(0))
        bboxes[i] = [lo[0], lo[1], hi[0], hi[1]]
        raw.append(pts)
    labels = np.array([v[0] for v in vectors], dtype=np.int64)
    return SampleGT(**vars(frame), labels=labels, points=points, closed=closed, lengths=lengths, bboxes=bboxes, raw=raw)
