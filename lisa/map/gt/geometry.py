"""Vector ground truth of one sample: the map around the LiDAR sensor, cut to the range, as polylines.

The patch is the range box (60 m along the sensor's y, 30 m along its x) centred on the sensor's global
position and turned by its yaw. Every record that intersects the patch is clipped to it and moved into
the sensor frame (turned by minus the yaw about the sensor, then shifted by minus its position):

- ``divider``: each road_divider and lane_divider line, clipped; multi-part results split.
- ``ped_crossing``: valid crossing polygons, clipped and unioned; their rings (exterior clockwise, holes
  counter-clockwise) cut to a box 0.2 m larger than the range, which keeps the cut along the patch edge,
  so a crossing cut by the edge is still one closed ring.
- ``boundary``: valid road_segment and lane polygons, clipped and unioned (a lane outside every road
  segment, such as a bus bay, bulges the outline; a hole such as a traffic island is a closed ring); rings
  cut to a box 0.2 m smaller than the range, which drops the artificial cut along the patch edge.

Start vertex and direction of a ring after a union are whatever GEOS gives; compare GT as sets of curves.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import LineString, MultiLineString, Polygon, box

from lisa.map.nuscenes.expansion import MapExpansion
from lisa.map.nuscenes.poses import yaw_of
from lisa.map.spec import CLASS_INDEX, RANGE

CROSSING_MARGIN = 0.2  # metres the crossing rings' box exceeds the range by
BOUNDARY_MARGIN = 0.2  # metres the boundary rings' box falls short of the range by
# map expansion layers of each class; nothing else is ground truth
CLASS_LAYERS: dict[str, tuple[str, ...]] = {
    "divider": ("road_divider", "lane_divider"),
    "ped_crossing": ("ped_crossing",),
    "boundary": ("road_segment", "lane"),
}


class MapGeometry:
    """The GT layers of one location as shapely arrays with a spatial index each (built once per map)."""

    def __init__(self, expansion: MapExpansion):
        self.location_path = expansion.path
        lines = [g for layer in CLASS_LAYERS["divider"] for g in expansion.layer_lines(layer)]
        # invalid polygons are skipped, as the devkit-based GT does
        crossings = [p for p in expansion.layer_polygons("ped_crossing") if p.is_valid]
        surfaces = [p for layer in CLASS_LAYERS["boundary"] for p in expansion.layer_polygons(layer) if p.is_valid]
        self.dividers = np.array(lines, dtype=object)
        self.crossings = np.array(crossings, dtype=object)
        self.surfaces = np.array(surfaces, dtype=object)
        self._trees = {name: shapely.STRtree(getattr(self, name)) for name in ("dividers", "crossings", "surfaces")}

    def query(self, name: str, patch: Polygon) -> np.ndarray:
        geoms = getattr(self, name)
        if len(geoms) == 0:
            return geoms
        return geoms[self._trees[name].query(patch, predicate="intersects")]


def patch_polygon(centre: np.ndarray, yaw: float) -> Polygon:
    """The range box around ``centre`` (global x, y), turned by ``yaw`` radians."""
    corners = np.array([[RANGE[0], RANGE[1]], [RANGE[2], RANGE[1]], [RANGE[2], RANGE[3]], [RANGE[0], RANGE[3]]])
    c, s = np.cos(yaw), np.sin(yaw)
    return Polygon(corners @ np.array([[c, s], [-s, c]]) + centre)


def _to_sensor(geoms: np.ndarray, centre: np.ndarray, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s], [s, c]])  # row vectors: (p - centre) @ rot turns by -yaw
    return shapely.transform(geoms, lambda xy: (xy - centre) @ rot)


def _line_parts(geom) -> list[LineString]:
    """Single, non-degenerate LineStrings of any clipping result (points and empties dropped)."""
    parts = [g for g in shapely.get_parts(geom) if g.geom_type == "LineString"]
    if len(parts) > 1:
        parts = [g for g in shapely.get_parts(shapely.line_merge(MultiLineString(parts)))]
    return [g for g in parts if g.length > 0]


def _polygon_parts(geoms: np.ndarray) -> list[Polygon]:
    return [p for g in geoms for p in shapely.get_parts(g) if p.geom_type == "Polygon" and not p.is_empty]


def _rings(polygons: list[Polygon], margin: float) -> list[LineString]:
    """Rings of the union of ``polygons`` (exterior clockwise, holes counter-clockwise), cut to the range
    grown by ``margin`` metres (negative: shrunk) and line-merged."""
    if not polygons:
        return []
    union = shapely.orient_polygons(shapely.union_all(polygons), exterior_cw=True)
    rings = []
    for poly in shapely.get_parts(union):
        if poly.geom_type != "Polygon" or poly.is_empty:
            continue
        rings.append(poly.exterior)
        rings.extend(poly.interiors)
    if not rings:
        return []
    area = box(RANGE[0] - margin, RANGE[1] - margin, RANGE[2] + margin, RANGE[3] + margin)
    return [line for cut in shapely.intersection(np.array(rings, dtype=object), area) for line in _line_parts(cut)]


def extract_vectors(geometry: MapGeometry, lidar2global: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``[(class index, raw points [N, 2] in metres, sensor frame)]``: dividers, then crossings, then
    boundaries. A closed ring repeats its first point at the end."""
    centre = np.asarray(lidar2global, dtype=np.float64)[:2, 3].copy()
    yaw = yaw_of(lidar2global)
    patch = patch_polygon(centre, yaw)
    out: list[tuple[int, np.ndarray]] = []

    lines = geometry.query("dividers", patch)
    if len(lines):
        for clipped in _to_sensor(shapely.intersection(lines, patch), centre, yaw):
            out += [(CLASS_INDEX["divider"], np.asarray(g.coords)[:, :2]) for g in _line_parts(clipped)]

    for name, cls, margin in (("crossings", "ped_crossing", CROSSING_MARGIN),
                              ("surfaces", "boundary", -BOUNDARY_MARGIN)):
        polys = geometry.query(name, patch)
        if len(polys):
            local = _polygon_parts(_to_sensor(shapely.intersection(polys, patch), centre, yaw))
            out += [(CLASS_INDEX[cls], np.asarray(g.coords)[:, :2]) for g in _rings(local, margin)]
    return out
