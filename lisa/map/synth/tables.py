"""Writing the 13 nuScenes tables of a small tree from scene descriptions.

A :class:`SceneSpec` lists its sensors (one calibrated_sensor each) and its key-frame samples, each with
the ego pose and timestamp of every sensor's sample_data (each sample_data has its own ego pose). One
log per scene; one map record (semantic prior) per location, naming all of that location's logs.
Tokens are derived from names, so the same description always gives the same tree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lisa.map.nuscenes.tables import TABLES
from lisa.map.synth.expansion import make_token
from lisa.map.synth.sensors import SensorSpec

CATEGORIES = (("vehicle.car", "Vehicle designed primarily for personal use."),
              ("human.pedestrian.adult", "Adult subcategory."),
              ("movable_object.barrier", "Temporary road barrier placed in the scene."))
ATTRIBUTES = (("vehicle.moving", "Vehicle is moving."), ("vehicle.parked", "Vehicle is stationary, usually parked."),
              ("pedestrian.moving", "The human is moving."))
VISIBILITY = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))


@dataclass
class SamplePoses:
    timestamp: int  # microseconds (the LiDAR's)
    ego: dict[str, tuple[list[float], list[float], int]]  # channel -> (translation, rotation wxyz, timestamp)


@dataclass
class SceneSpec:
    name: str
    location: str
    sensors: list[SensorSpec]
    samples: list[SamplePoses]
    description: str = ""
    date: str = "2018-08-01"


@dataclass
class TreeIndex:
    """What ``write_tables`` wrote: per scene, per sample, the sample token and channel -> file name."""

    sample_tokens: list[list[str]] = field(default_factory=list)
    files: list[list[dict[str, str]]] = field(default_factory=list)
    prior_files: dict[str, str] = field(default_factory=dict)  # location -> semantic prior PNG


def write_tables(dataroot: str | Path, version: str, scenes: list[SceneSpec]) -> TreeIndex:
    root = Path(dataroot)
    t: dict[str, list[dict]] = {name: [] for name in TABLES}
    t["category"] = [{"token": make_token("category", n), "name": n, "description": d, "index": i}
                     for i, (n, d) in enumerate(CATEGORIES)]
    t["attribute"] = [{"token": make_token("attribute", n), "name": n, "description": d} for n, d in ATTRIBUTES]
    t["visibility"] = [{"token": tok, "level": lvl, "description": f"visibility of whole object is {lvl}"}
                       for tok, lvl in VISIBILITY]
    channels = sorted({s.channel: s.modality for sc in scenes for s in sc.sensors}.items())
    t["sensor"] = [{"token": make_token("sensor", c), "channel": c, "modality": m} for c, m in channels]
    index = TreeIndex()
    logs_by_location: dict[str, list[str]] = {}
    for sc in scenes:
        log = make_token("log", sc.name)
        logfile = f"synth-{sc.date}-{sc.name}"
        t["log"].append({"token": log, "logfile": logfile, "vehicle": "synth", "date_captured": sc.date,
                         "location": sc.location})
        logs_by_location.setdefault(sc.location, []).append(log)
        calib = {}
        for s in sc.sensors:
            calib[s.channel] = make_token("calibrated_sensor", sc.name, s.channel)
            t["calibrated_sensor"].append({"token": calib[s.channel], "sensor_token": make_token("sensor", s.channel),
                                           "translation": s.translation, "rotation": s.rotation,
                                           "camera_intrinsic": s.intrinsic})
        tokens = [make_token("sample", sc.name, i) for i in range(len(sc.samples))]
        scene_token = make_token("scene", sc.name)
        files_of_scene = []
        for i, sample in enumerate(sc.samples):
            t["sample"].append({"token": tokens[i], "timestamp": sample.timestamp, "scene_token": scene_token,
                                "prev": tokens[i - 1] if i else "",
                                "next": tokens[i + 1] if i + 1 < len(tokens) else ""})
            files = {}
            for s in sc.sensors:
                translation, rotation, stamp = sample.ego[s.channel]
                sd = make_token("sample_data", sc.name, i, s.channel)
                ego = make_token("ego_pose", sc.name, i, s.channel)
                t["ego_pose"].append({"token": ego, "timestamp": stamp, "rotation": list(rotation),
                                      "translation": list(translation)})
                ext = "jpg" if s.modality == "camera" else "pcd.bin"
                files[s.channel] = f"samples/{s.channel}/{logfile}__{s.channel}__{stamp}.{ext}"
                t["sample_data"].append({
                    "token": sd, "sample_token": tokens[i], "ego_pose_token": ego,
                    "calibrated_sensor_token": calib[s.channel],
                    "timestamp": stamp, "fileformat": "jpg" if s.modality == "camera" else "pcd", "is_key_frame": True,
                    "height": s.height, "width": s.width, "filename": files[s.channel],
                    "prev": make_token("sample_data", sc.name, i - 1, s.channel) if i else "",
                    "next": make_token("sample_data", sc.name, i + 1, s.channel) if i + 1 < len(tokens) else ""})
            files_of_scene.append(files)
        t["scene"].append({"token": scene_token, "log_token": log, "nbr_samples": len(tokens),
                           "first_sample_token": tokens[0], "last_sample_token": tokens[-1], "name": sc.name,
                           "description": sc.description})
        index.sample_tokens.append(tokens)
        index.files.append(files_of_scene)
    for location, logs in logs_by_location.items():
        token = make_token("map", location)
        index.prior_files[location] = f"maps/{token}.png"
        t["map"].append({"token": token, "log_tokens": logs, "category": "semantic_prior",
                         "filename": index.prior_files[location]})
    folder = root / version
    folder.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        (folder / f"{name}.json").write_text(json.dumps(t[name], indent=0))
    (root / "sweeps").mkdir(exist_ok=True)
    return index


def write_placeholders(dataroot: str | Path, index: TreeIndex) -> None:
    """Tiny valid stand-ins for every sample file and semantic prior (trees whose pixels do not matter)."""
    from PIL import Image

    root = Path(dataroot)
    files = [f for scene in index.files for sample in scene for f in sample.values()]
    for rel in files + list(index.prior_files.values()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".jpg"):
            Image.new("RGB", (16, 9), (90, 90, 90)).save(path, quality=80)
        elif rel.endswith(".png"):
            Image.new("L", (10, 10), 0).save(path)
        else:
            path.write_bytes(b"")
