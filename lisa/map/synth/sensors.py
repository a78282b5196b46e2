"""The synthetic car's sensors: LIDAR_TOP and six cameras with nuScenes-like calibrations.

Positions (ego frame: x forward, y left, z up) and headings follow the nuScenes car; camera frames are
x right, y down, z forward. Intrinsics are those of the 1600 x 900 nuScenes images scaled to the
requested image size. Each scene gets its own calibration, jittered by a centimetre and a few tenths
of a degree, as real logs differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lisa.map.nuscenes.poses import matrix_quaternion, quaternion_matrix, yaw_quaternion

# channel: (x, y, z, yaw in degrees, focal length at 1600 px width)
CAMERA_MOUNTS = {
    "CAM_FRONT": (1.70, 0.02, 1.51, 0.0, 1266.4),
    "CAM_FRONT_RIGHT": (1.55, -0.49, 1.50, -55.0, 1260.8),
    "CAM_FRONT_LEFT": (1.52, 0.49, 1.51, 55.0, 1272.6),
    "CAM_BACK": (0.03, 0.00, 1.58, 180.0, 809.2),
    "CAM_BACK_LEFT": (1.04, 0.48, 1.56, 110.0, 1256.7),
    "CAM_BACK_RIGHT": (1.02, -0.48, 1.57, -110.0, 1259.5),
}
LIDAR_MOUNT = (0.94, 0.0, 1.84, -90.0)  # its x axis points to the car's right, y forward
# camera frame (x right, y down, z forward) -> a forward-looking body frame (x forward, y left, z up)
_CAM_TO_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass
class SensorSpec:
    channel: str
    modality: str  # "camera" or "lidar"
    translation: list[float]
    rotation: list[float]  # quaternion w, x, y, z: sensor -> ego
    intrinsic: list[list[float]]  # 3x3, [] for the LiDAR
    width: int = 0
    height: int = 0


def sensor_rig(rng: np.random.Generator, width: int, height: int, jitter: bool = True) -> list[SensorSpec]:
    """LIDAR_TOP and the six cameras for one scene."""
    def noise(scale: float) -> float:
        return float(rng.normal(0.0, scale)) if jitter else 0.0

    x, y, z, yaw = LIDAR_MOUNT
    rig = [SensorSpec("LIDAR_TOP", "lidar", [x, y, z],
                      yaw_quaternion(np.radians(yaw + noise(0.1)), noise(0.002), noise(0.002)).tolist(), [])]
    scale = width / 1600.0
    for channel, (x, y, z, yaw, focal) in CAMERA_MOUNTS.items():
        body = quaternion_matrix(yaw_quaternion(np.radians(yaw + noise(0.2)), np.radians(noise(0.3)),
                                                np.radians(noise(0.2))))
        rotation = matrix_quaternion(body @ _CAM_TO_BODY)
        f = focal * scale
        intrinsic = [[f, 0.0, width / 2 + noise(1.0)], [0.0, f, height / 2 + noise(1.0)], [0.0, 0.0, 1.0]]
        rig.append(SensorSpec(channel, "camera", [x + noise(0.01), y + noise(0.01), z + noise(0.01)],
                              rotation.tolist(), intrinsic, width, height))
    return rig
