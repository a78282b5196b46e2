"""Writing a nuScenes map expansion (schema v1.3): nodes, lines, polygons and the layers over them.

:class:`MapBuilder` collects geometry in metres and writes a file the devkit would read: every layer key
present, tokens 32 hex digits, ``version`` "1.3". Nodes are shared: one coordinate is one node token, and
on ``build`` every polygon ring gets the vertices of other polygons that lie on its edges inserted, so
adjacent road segments and lanes share vertices along common edges (as real maps do; without that, a
union leaves slivers that show up as spurious boundary rings). Tests build small hand-made maps with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lisa.map.nuscenes.expansion import DICT_LAYERS, LIST_LAYERS, expansion_path

VERSION = "1.3"
Coords = Sequence[tuple[float, float]]


def make_token(*parts: object) -> str:
    """A deterministic 32-hex-digit token from any parts (nuScenes tokens look like this)."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def empty_expansion(canvas: tuple[float, float] = (100.0, 100.0)) -> dict:
    """A valid map with no records (the locations the synthetic tree does not drive in)."""
    data: dict = {k: [] for k in LIST_LAYERS}
    data.update({k: {} for k in DICT_LAYERS})
    data.update(version=VERSION, canvas_edge=list(canvas))
    return data


def write_expansion(dataroot: str | Path, location: str, data: dict) -> Path:
    path = expansion_path(dataroot, location)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _insert_vertices(ring: list[tuple[float, float]], vertices: np.ndarray, tol: float = 1e-6) -> list:
    """``ring`` (closed implicitly) with every vertex that lies inside one of its edges inserted in order."""
    out = []
    n = len(ring)
    for i in range(n):
        a, b = np.asarray(ring[i]), np.asarray(ring[(i + 1) % n])
        out.append(ring[i])
        ab = b - a
        length2 = float(ab @ ab)
        if length2 == 0:
            continue
        t = (vertices - a) @ ab / length2
        dist = np.abs((vertices[:, 0] - a[0]) * ab[1] - (vertices[:, 1] - a[1]) * ab[0]) / np.sqrt(length2)
        on = (t > 1e-9) & (t < 1 - 1e-9) & (dist < tol)
        for k in np.argsort(t[on]):
            out.append(tuple(vertices[on][k]))
    return out


class MapBuilder:
    """Accumulates map records; ``build()`` returns the expansion dict."""

    def __init__(self, name: str, canvas: tuple[float, float]):
        self.name = name
        self.canvas = canvas
        self.layers: dict[str, list[dict]] = {k: [] for k in LIST_LAYERS if k not in ("node", "line", "polygon")}
        self._polygons: list[tuple[str, list, list[list]]] = []  # (token, exterior, holes)
        self._lines: list[tuple[str, list]] = []
        self._count = 0

    def _token(self, kind: str) -> str:
        self._count += 1
        return make_token(self.name, kind, self._count)

    def polygon(self, exterior: Coords, holes: Iterable[Coords] = ()) -> str:
        token = self._token("polygon")
        self._polygons.append((token, [tuple(map(float, p)) for p in exterior],
                               [[tuple(map(float, p)) for p in h] for h in holes]))
        return token

    def line(self, coords: Coords) -> str:
        token = self._token("line")
        self._lines.append((token, [tuple(map(float, p)) for p in coords]))
        return token

    def add(self, layer: str, **fields) -> str:
        """A record of ``layer`` (``polygon_token=`` / ``line_token=`` and the layer's other fields)."""
        token = self._token(layer)
        self.layers[layer].append({"token": token, **fields})
        return token

    def build(self) -> dict:
        data = empty_expansion(self.canvas)
        nodes: dict[tuple[float, float], str] = {}

        def node(p: tuple[float, float]) -> str:
            key = (round(p[0], 6), round(p[1], 6))
            if key not in nodes:
                nodes[key] = make_token(self.name, "node", key)
                data["node"].append({"token": nodes[key], "x": key[0], "y": key[1]})
            return nodes[key]

        vertices = np.array([p for _, ext, holes in self._polygons for ring in (ext, *holes) for p in ring]
                            or np.zeros((0, 2)))
        vertices = np.unique(np.round(vertices, 6), axis=0)
        for token, ext, holes in self._polygons:
            data["polygon"].append({
                "token": token,
                "exterior_node_tokens": [node(p) for p in _insert_vertices(ext, vertices)],
                "holes": [{"node_tokens": [node(p) for p in _insert_vertices(h, vertices)]} for h in holes],
            })
        line_nodes = {}
        for token, coords in self._lines:
            line_nodes[token] = [node(p) for p in coords]
            data["line"].append({"token": token, "node_tokens": line_nodes[token]})
        for layer, records in self.layers.items():
            data[layer] = [dict(r) for r in records]
        for r in data["lane_divider"]:  # the devkit reads these; derive them from the divider's own nodes
            r.setdefault("lane_divider_segments", [{"node_token": t, "segment_type": "DOUBLE_DASHED_WHITE"}
                                                   for t in line_nodes.get(r.get("line_token"), [])])
        return data
