"""``write_synthetic_tree``: a small but real nuScenes tree of the synthetic town.

What it writes under ``out``: ``v1.0-mini/`` (or ``--version``) with the 13 tables; ``maps/expansion/``
with the town's map (v1.3) for one location and empty maps for the other three; the semantic-prior PNG;
``samples/LIDAR_TOP/*.pcd.bin`` and ``samples/CAM_*/*.jpg`` for every key frame; ``split.json`` with the
``train`` and ``val`` scene names (the last ``val_fraction`` of the scenes, at least one when there are
two or more and the fraction is above 0). Each scene draws its route, speed, lane offset and calibration
from its own generator (seeded by ``(seed, scene index)``), so scenes do not change when ``scenes`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lisa.map.nuscenes.expansion import LOCATIONS, MapExpansion
from lisa.map.nuscenes.poses import transform_matrix, yaw_quaternion
from lisa.map.synth.expansion import empty_expansion, write_expansion
from lisa.map.synth.render import draw_texture, lidar_points, render_camera, semantic_prior
from lisa.map.synth.routes import lane_path, pose_at, random_route
from lisa.map.synth.sensors import sensor_rig
from lisa.map.synth.tables import SamplePoses, SceneSpec, write_tables
from lisa.map.synth.town import build_town

# milliseconds after the LiDAR key frame at which each camera fires (they differ, so do their ego poses)
FIRE_MS = {"LIDAR_TOP": 0, "CAM_FRONT": 12, "CAM_FRONT_RIGHT": 20, "CAM_FRONT_LEFT": 4, "CAM_BACK": 37,
           "CAM_BACK_LEFT": 29, "CAM_BACK_RIGHT": 45}
KEY_FRAME_US = 500_000  # 2 Hz key frames, as nuScenes
START_US = 1533151603547590


@dataclass
class SynthOptions:
    out: str
    scenes: int = 4
    samples_per_scene: int = 10
    val_fraction: float = 0.25
    version: str = "v1.0-mini"
    location: str = "boston-seaport"
    image_size: tuple[int, int] = (320, 180)  # width, height
    texture_resolution: float = 0.1  # metres per texture pixel
    prior_resolution: float = 0.1  # metres per pixel of the semantic prior (the devkit's native 0.1)
    speed: tuple[float, float] = (3.0, 8.0)  # m/s, drawn per scene
    seed: int = 0
    progress: bool = True


def _scene(town, index: int, options: SynthOptions) -> SceneSpec:
    rng = np.random.default_rng([options.seed, index])
    width, height = options.image_size
    rig = sensor_rig(rng, width, height)
    speed = float(rng.uniform(*options.speed))
    offset = float(rng.uniform(1.6, 2.0))
    span = speed * (KEY_FRAME_US * (options.samples_per_scene - 1) + 1e3 * max(FIRE_MS.values())) / 1e6
    path = lane_path(random_route(town, rng, span + 60.0), offset)
    start = float(rng.uniform(5.0, max(5.0, path.length - span - 5.0)))
    t0 = START_US + index * 100_000_000
    samples = []
    for k in range(options.samples_per_scene):
        stamp = t0 + k * KEY_FRAME_US
        pitch, roll = rng.normal(0.0, np.radians(0.3), 2)
        ego = {}
        for s in rig:
            t = stamp + 1000 * FIRE_MS[s.channel]
            xy, heading = pose_at(path, start + speed * (t - t0) / 1e6)
            ego[s.channel] = ([float(xy[0]), float(xy[1]), 0.0], yaw_quaternion(heading, pitch, roll).tolist(), t)
        samples.append(SamplePoses(stamp, ego))
    return SceneSpec(f"scene-{index + 1:04d}", options.location, rig, samples,
                     f"synthetic town drive, {speed:.1f} m/s, lane offset {offset:.2f} m")


def write_synthetic_tree(options: SynthOptions) -> dict:
    """Write the tree; returns ``{"train": [...], "val": [...]}`` (also in ``out/split.json``)."""
    from tqdm import tqdm

    if options.scenes < 1 or options.samples_per_scene < 1:
        raise ValueError("--scenes and --samples_per_scene must be at least 1")
    if options.location not in LOCATIONS:
        raise ValueError(f"unknown location {options.location!r} (one of {', '.join(LOCATIONS)})")
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    town = build_town()
    for location in LOCATIONS:
        write_expansion(out, location, town.builder.build() if location == options.location else empty_expansion())
    m = MapExpansion.load(out, options.location)
    scenes = [_scene(town, i, options) for i in range(options.scenes)]
    index = write_tables(out, options.version, scenes)
    semantic_prior(m, options.prior_resolution).save(out / index.prior_files[options.location])
    texture = draw_texture(m, options.texture_resolution)
    jobs = [(i, k) for i in range(len(scenes)) for k in range(len(scenes[i].samples))]
    for i, k in tqdm(jobs, desc="synth", unit="sample", disable=not options.progress):
        rng = np.random.default_rng([options.seed, i, k, 1])
        sample = scenes[i].samples[k]
        for s in scenes[i].sensors:
            translation, rotation, _ = sample.ego[s.channel]
            sensor2global = transform_matrix(translation, rotation) @ transform_matrix(s.translation, s.rotation)
            path = out / index.files[i][k][s.channel]
            path.parent.mkdir(parents=True, exist_ok=True)
            if s.modality == "camera":
                img = render_camera(texture, np.asarray(s.intrinsic), sensor2global, s.width, s.height, rng)
                Image.fromarray(img).save(path, quality=90)
            else:
                lidar_points(texture, sensor2global, rng=rng).tofile(path)
    n_val = 0
    if options.scenes >= 2 and options.val_fraction > 0:
        n_val = max(1, round(options.scenes * options.val_fraction))
    names = [s.name for s in scenes]
    split = {"train": names[:len(names) - n_val], "val": names[len(names) - n_val:]}
    (out / "split.json").write_text(json.dumps(split, indent=1))
    return split
