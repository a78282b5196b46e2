"""The nuScenes map expansion (``maps/expansion/<location>.json``), read with the devkit's semantics.

A map is a set of layers of records over shared ``node`` (x, y in metres) -> ``line`` / ``polygon``
geometry. Polygon layers point at a ``polygon_token`` (drivable_area at ``polygon_tokens``), line layers at
a ``line_token``; a polygon is its exterior node ring plus hole rings. The file must carry every layer key
(possibly empty) and a ``version`` of at least 1.3 (compared as numbers, so "1.10" is newer than "1.3").
"""

from __future__ import annotations

import json
from pathlib import Path

from shapely.geometry import LineString, Polygon

from lisa.map.errors import MapDataError

LOCATIONS = ("boston-seaport", "singapore-hollandvillage", "singapore-onenorth", "singapore-queenstown")
MIN_VERSION = "1.3"
LIST_LAYERS = ("polygon", "line", "node", "drivable_area", "road_segment", "road_block", "lane", "ped_crossing",
               "walkway", "stop_line", "carpark_area", "road_divider", "lane_divider", "traffic_light",
               "lane_connector")
DICT_LAYERS = ("arcline_path_3", "connectivity")
POLYGON_LAYERS = ("road_segment", "road_block", "lane", "ped_crossing", "walkway", "stop_line", "carpark_area",
                  "lane_connector")
LINE_LAYERS = ("road_divider", "lane_divider", "traffic_light")


def expansion_path(dataroot: str | Path, location: str) -> Path:
    return Path(dataroot) / "maps" / "expansion" / f"{location}.json"


def _version_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).split("."))
    except ValueError:
        return (0,)


class MapExpansion:
    """One location's map expansion: layers by name and node/line/polygon lookups by token."""

    def __init__(self, data: dict, path: Path):
        self.path = path
        self.version = str(data.get("version", "1.0"))
        if _version_tuple(self.version) < _version_tuple(MIN_VERSION):
            raise MapDataError(f"map expansion {path} has version {self.version}; {MIN_VERSION} or newer is needed "
                               f"(download the map expansion v1.3 from nuScenes)")
        missing = [k for k in (*LIST_LAYERS, *DICT_LAYERS, "canvas_edge") if k not in data]
        if missing:
            raise MapDataError(f"map expansion {path} lacks the layers {', '.join(missing)}")
        self.layers = {k: data[k] for k in (*LIST_LAYERS, *DICT_LAYERS)}
        self.canvas_edge = tuple(data["canvas_edge"])
        try:
            self.nodes = {n["token"]: (float(n["x"]), float(n["y"])) for n in data["node"]}
        except (KeyError, TypeError, ValueError) as e:
            raise MapDataError(f"map expansion {path}: a node lacks token/x/y ({e})") from None
        self._lines = {r["token"]: r for r in data["line"]}
        self._polygons = {r["token"]: r for r in data["polygon"]}

    @classmethod
    def load(cls, dataroot: str | Path, location: str) -> MapExpansion:
        if location not in LOCATIONS:
            raise MapDataError(f"unknown map location {location!r} (nuScenes has {', '.join(LOCATIONS)})")
        path = expansion_path(dataroot, location)
        if not path.is_file():
            raise MapDataError(f"map expansion {path} is missing (unpack the nuScenes map expansion v1.3 into "
                               f"{path.parent})")
        try:
            data = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MapDataError(f"map expansion {path} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise MapDataError(f"map expansion {path} must be a JSON object of layers")
        return cls(data, path)

    def _coords(self, tokens: list[str], what: str) -> list[tuple[float, float]]:
        try:
            return [self.nodes[t] for t in tokens]
        except KeyError as e:
            raise MapDataError(f"map expansion {self.path}: {what} uses node {e.args[0]!r}, "
                               f"which is not in 'node'") from None

    def line(self, token: str) -> LineString:
        """The line record ``token`` as a LineString (a line needs at least two nodes)."""
        record = self._lines.get(token)
        if record is None:
            raise MapDataError(f"map expansion {self.path}: no line {token!r}")
        coords = self._coords(record["node_tokens"], f"line {token}")
        if len(coords) < 2:
            raise MapDataError(f"map expansion {self.path}: line {token} has {len(coords)} node(s); 2 or more needed")
        return LineString(coords)

    def polygon(self, token: str) -> Polygon:
        """The polygon record ``token``: exterior ring and holes (it may be invalid; callers check)."""
        record = self._polygons.get(token)
        if record is None:
            raise MapDataError(f"map expansion {self.path}: no polygon {token!r}")
        exterior = self._coords(record["exterior_node_tokens"], f"polygon {token}")
        holes = [self._coords(h["node_tokens"], f"a hole of polygon {token}") for h in record.get("holes", [])]
        if len(exterior) < 3 or any(len(h) < 3 for h in holes):
            raise MapDataError(f"map expansion {self.path}: polygon {token} has a ring of fewer than 3 nodes")
        return Polygon(exterior, holes)

    def layer_polygons(self, layer: str) -> list[Polygon]:
        """Every polygon of a polygon layer, in record order."""
        if layer == "drivable_area":
            return [self.polygon(t) for r in self.layers[layer] for t in r["polygon_tokens"]]
        if layer not in POLYGON_LAYERS:
            raise ValueError(f"{layer!r} is not a polygon layer")
        return [self.polygon(r["polygon_token"]) for r in self.layers[layer]]

    def layer_lines(self, layer: str) -> list[LineString]:
        if layer not in LINE_LAYERS:
            raise ValueError(f"{layer!r} is not a line layer")
        return [self.line(r["line_token"]) for r in self.layers[layer]]
