"""Rigid transforms as nuScenes stores them: a translation ``[x, y, z]`` and a unit quaternion ``[w, x, y, z]``.

Every transform here is a 4x4 homogeneous matrix that maps points of the child frame into the parent frame
(``lidar2ego`` maps LiDAR points into the ego frame). The yaw of a rotation is the heading of its rotated
x axis in the ground plane, as the devkit defines it, so a sensor tilted by a few tenths of a degree still
gets the heading of its x axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def quaternion_matrix(q: Sequence[float]) -> np.ndarray:
    """3x3 rotation matrix of a quaternion ``[w, x, y, z]`` (normalised first, as nuScenes stores rounded ones)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(np.asarray(q, dtype=np.float64))
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_quaternion(r: np.ndarray) -> np.ndarray:
    """Quaternion ``[w, x, y, z]`` (w >= 0) of a 3x3 rotation matrix."""
    r = np.asarray(r, dtype=np.float64)
    trace = np.trace(r)
    if trace > 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (r[k, j] - r[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (r[j, i] + r[i, j]) / s
        q[1 + k] = (r[k, i] + r[i, k]) / s
    q = np.asarray(q)
    return q if q[0] >= 0 else -q


def yaw_quaternion(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Quaternion of the rotation ``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (radians)."""
    cy, sy = np.cos(yaw / 2), np.sin(yaw / 2)
    cp, sp = np.cos(pitch / 2), np.sin(pitch / 2)
    cr, sr = np.cos(roll / 2), np.sin(roll / 2)
    return np.array([
        cr * cp * cy + sr * sp * sy,
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
    ])


def transform_matrix(translation: Sequence[float], rotation: Sequence[float]) -> np.ndarray:
    """4x4 matrix of a nuScenes record's ``translation`` and ``rotation`` (child -> parent)."""
    m = np.eye(4)
    m[:3, :3] = quaternion_matrix(rotation)
    m[:3, 3] = np.asarray(translation, dtype=np.float64)
    return m


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (exact for rotation + translation)."""
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return out


def yaw_of(m: np.ndarray) -> float:
    """Heading (radians, in (-pi, pi]) of the rotated x axis of a 3x3 rotation or 4x4 transform."""
    r = np.asarray(m)[:3, :3]
    return float(np.arctan2(r[1, 0], r[0, 0]))
