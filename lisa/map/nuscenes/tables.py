"""The 13 JSON tables of a nuScenes tree, read with the devkit's semantics (no devkit dependency).

``NuScenesTree(dataroot, version)`` reads ``DATAROOT/VERSION/*.json``: every table must exist (an empty
list is fine), tokens are indexed, and the references this package follows are checked when the tree is
read, so a broken tree fails at once with the table, record and token named. ``sample["data"]`` maps
each channel to its key-frame sample_data, as in the devkit. Sample files are not opened here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from lisa.map.errors import MapDataError

TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose",
          "log", "scene", "sample", "sample_data", "sample_annotation", "map")
# (table, field, referenced table) pairs checked at load; a missing target is a broken tree
_REFERENCES = (
    ("scene", "log_token", "log"), ("scene", "first_sample_token", "sample"),
    ("sample", "scene_token", "scene"),
    ("sample_data", "sample_token", "sample"), ("sample_data", "ego_pose_token", "ego_pose"),
    ("sample_data", "calibrated_sensor_token", "calibrated_sensor"),
    ("calibrated_sensor", "sensor_token", "sensor"),
    ("sample_annotation", "sample_token", "sample"), ("sample_annotation", "instance_token", "instance"),
    ("instance", "category_token", "category"),
)


def check_dataroot(dataroot: str | Path, version: str) -> Path:
    """The version folder of a nuScenes tree, or an error naming what is missing."""
    root = Path(dataroot)
    if not root.is_dir():
        raise MapDataError(f"nuScenes dataroot {root} does not exist or is not a folder")
    folder = root / version
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v1.0"))
        raise MapDataError(f"no version folder {folder} (folders found under {root}: {', '.join(found) or 'none'}); "
                           f"check --dataroot and --version")
    return folder


def _read_table(path: Path) -> list[dict]:
    if not path.is_file():
        raise MapDataError(f"nuScenes table {path} is missing (a tree needs all 13 tables: {', '.join(TABLES)})")
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MapDataError(f"nuScenes table {path} is not valid JSON: {e}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) and "token" in r for r in data):
        raise MapDataError(f"nuScenes table {path} must be a list of records that each have a 'token'")
    return data


class NuScenesTree:
    """Tables of one nuScenes version, indexed by token."""

    def __init__(self, dataroot: str | Path, version: str):
        self.dataroot = Path(dataroot)
        self.version = version
        folder = check_dataroot(dataroot, version)
        self.tables: dict[str, list[dict]] = {name: _read_table(folder / f"{name}.json") for name in TABLES}
        self._index = {name: {r["token"]: r for r in records} for name, records in self.tables.items()}
        self._check_references(folder)
        self._check_maps(folder)
        for s in self.tables["sample"]:
            s["data"] = {}
        for sd in self.tables["sample_data"]:
            cs = self.get("calibrated_sensor", sd["calibrated_sensor_token"])
            sensor = self.get("sensor", cs["sensor_token"])
            sd["channel"], sd["sensor_modality"] = sensor["channel"], sensor["modality"]
            if sd.get("is_key_frame"):
                self.get("sample", sd["sample_token"])["data"][sensor["channel"]] = sd["token"]
        self.scene_by_name = {s["name"]: s for s in self.tables["scene"]}

    def get(self, table: str, token: str) -> dict:
        try:
            return self._index[table][token]
        except KeyError:
            path = self.dataroot / self.version / f"{table}.json"
            raise MapDataError(f"{path}: no record with token {token!r}") from None

    def _check_references(self, folder: Path) -> None:
        for table, field, target in _REFERENCES:
            index = self._index[target]
            for r in self.tables[table]:
                if field not in r:
                    raise MapDataError(f"{folder / (table + '.json')}: record {r['token']} has no field {field!r}")
                if r[field] not in index:
                    raise MapDataError(f"{folder / (table + '.json')}: record {r['token']} refers to {field} "
                                       f"{r[field]!r}, which is not in {target}.json")

    def _check_maps(self, folder: Path) -> None:
        mapped: set[str] = set()
        for m in self.tables["map"]:
            if "log_tokens" not in m or "filename" not in m:
                raise MapDataError(f"{folder / 'map.json'}: record {m['token']} needs 'log_tokens' and 'filename'")
            mapped.update(m["log_tokens"])
            if not (self.dataroot / m["filename"]).is_file():
                raise MapDataError(f"{folder / 'map.json'}: record {m['token']} names the semantic prior "
                                   f"{self.dataroot / m['filename']}, which does not exist")
        for log in self.tables["log"]:
            if log["token"] not in mapped:
                raise MapDataError(f"{folder / 'log.json'}: log {log['token']} is in no map record's log_tokens")

    def scenes(self, names: Iterable[str]) -> list[dict]:
        """Scene records by name, in the given order; an unknown name is an error naming the tree."""
        out = []
        for name in names:
            if name not in self.scene_by_name:
                path = self.dataroot / self.version / "scene.json"
                raise MapDataError(f"scene {name!r} of the split is not in {path} "
                                   f"({len(self.scene_by_name)} scenes there)")
            out.append(self.scene_by_name[name])
        return out

    def scene_samples(self, scene: dict) -> list[dict]:
        """The scene's samples in time order, following the ``next`` chain from ``first_sample_token``."""
        out, token = [], scene["first_sample_token"]
        while token:
            sample = self.get("sample", token)
            out.append(sample)
            token = sample.get("next", "")
            if len(out) > len(self.tables["sample"]):
                raise MapDataError(f"sample.json: the next chain of scene {scene['name']} loops")
        return out

    def location(self, scene: dict) -> str:
        return self.get("log", scene["log_token"])["location"]
