"""The synthetic town: a 2 x 2 grid of roads with everything the GT has to get right.

Roads are straight, in road coordinates (s along, t across, t > 0 on the left of +s; traffic keeps
right, so lanes with t < 0 drive towards +s). Each road is cut at the intersections into segments:
a road_segment rectangle, lanes (strips of ``lane_width``, cut every ``LANE_PIECE`` m along), a
road_divider on the centre line and lane_dividers between lanes of one direction. On top:

- a median island on V0 (a hole in a road_segment; the inner lanes narrow around it, no road_divider);
- a bus bay on H0: a lane outside every road_segment, so the road boundary bulges;
- ped_crossings on every intersection arm, stop lines before them, lane connectors inside the
  intersections, walkways along the roads, a car park and a drivable_area slightly larger than the roads
  (distractors: none of them is ground truth).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lisa.map.synth.expansion import MapBuilder

ORIGIN = np.array([150.0, 130.0])  # local town coordinates -> map coordinates (kept positive, as in nuScenes)
CANVAS = (460.0, 400.0)
LANE_PIECE = 40.0  # metres: lanes are cut into pieces of at most this length
NODE_STEP = 10.0  # metres between the nodes of a divider line
WALKWAY = 3.0
CROSSING = (1.0, 5.0)  # metres from the intersection edge: start, end of a crossing
STOP_LINE = (5.5, 6.1)
ISLAND = {"road": "V0", "piece": (45.0, 85.0), "hole": (52.0, 78.0), "half_width": 0.6}
BUS_BAY = {"road": "H0", "outline": [(60.0, 0.0), (68.0, -3.5), (100.0, -3.5), (108.0, 0.0)]}  # t below the edge
CARPARK = {"road": "H1", "s": (30.0, 80.0), "depth": 30.0}


@dataclass
class Road:
    name: str
    axis: str  # "h": along x at y = at; "v": along y at x = at
    at: float
    start: float
    end: float
    lanes: int  # per direction
    lane_width: float

    @property
    def half(self) -> float:
        return self.lanes * self.lane_width

    def xy(self, s: float, t: float) -> tuple[float, float]:
        p = (s, self.at + t) if self.axis == "h" else (self.at - t, s)
        return (float(p[0] + ORIGIN[0]), float(p[1] + ORIGIN[1]))

    def rect(self, s0: float, s1: float, t0: float, t1: float) -> list[tuple[float, float]]:
        pts = [self.xy(s0, t0), self.xy(s1, t0), self.xy(s1, t1), self.xy(s0, t1)]
        return pts if _ccw(pts) else pts[::-1]


ROADS = (Road("H0", "h", 0.0, -110.0, 260.0, 2, 3.5), Road("H1", "h", 130.0, -110.0, 260.0, 1, 3.75),
         Road("V0", "v", 0.0, -90.0, 220.0, 2, 3.5), Road("V1", "v", 160.0, -90.0, 220.0, 1, 4.0))


def _ccw(pts) -> bool:
    a = np.asarray(pts)
    return float(np.sum(a[:, 0] * np.roll(a[:, 1], -1) - np.roll(a[:, 0], -1) * a[:, 1])) > 0


@dataclass
class Town:
    """The built map and the road graph routes drive on (map coordinates)."""

    builder: MapBuilder
    nodes: dict[str, np.ndarray] = field(default_factory=dict)
    edges: dict[str, list[str]] = field(default_factory=dict)

    def link(self, a: str, b: str) -> None:
        self.edges.setdefault(a, []).append(b)
        self.edges.setdefault(b, []).append(a)


def _pieces(road: Road, cuts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    edges = [road.start] + [v for c in cuts for v in c] + [road.end]
    pieces = [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2)]
    if road.name == ISLAND["road"]:
        out = []
        for a, b in pieces:
            i0, i1 = ISLAND["piece"]
            out += [(a, i0), (i0, i1), (i1, b)] if a < i0 < i1 < b else [(a, b)]
        pieces = out
    return pieces


def _line(road: Road, s0: float, s1: float, t: float) -> list[tuple[float, float]]:
    n = max(1, int(np.ceil(abs(s1 - s0) / NODE_STEP)))
    return [road.xy(s, t) for s in np.linspace(s0, s1, n + 1)]


def _segment(b: MapBuilder, road: Road, s0: float, s1: float, drivable: list[str]) -> None:
    island = road.name == ISLAND["road"] and (s0, s1) == ISLAND["piece"]
    holes = []
    if island:
        h0, h1 = ISLAND["hole"]
        w = ISLAND["half_width"]
        holes = [road.rect(h0, h1, -w, w)[::-1]]
    seg = b.add("road_segment", polygon_token=b.polygon(road.rect(s0, s1, -road.half, road.half), holes),
                is_intersection=False, drivable_area_token="")
    drivable.append(b.polygon(road.rect(s0, s1, -road.half - 0.5, road.half + 0.5)))
    n_pieces = max(1, int(np.ceil((s1 - s0) / LANE_PIECE)))
    cuts = np.linspace(s0, s1, n_pieces + 1)
    for k in range(2 * road.lanes):
        t0, t1 = -road.half + k * road.lane_width, -road.half + (k + 1) * road.lane_width
        if island and t1 == 0.0:
            t1 = -ISLAND["half_width"]
        if island and t0 == 0.0:
            t0 = ISLAND["half_width"]
        for a, c in zip(cuts[:-1], cuts[1:]):
            b.add("lane", polygon_token=b.polygon(road.rect(a, c, t0, t1)), lane_type="CAR",
                  from_edge_line_token=b.line([road.xy(a, t0), road.xy(a, t1)]),
                  to_edge_line_token=b.line([road.xy(c, t0), road.xy(c, t1)]),
                  left_lane_divider_segments=[], right_lane_divider_segments=[])
    if not island:
        b.add("road_divider", line_token=b.line(_line(road, s0, s1, 0.0)), road_segment_token=seg)
    for j in range(1, road.lanes):
        for t in (j * road.lane_width, -j * road.lane_width):
            b.add("lane_divider", line_token=b.line(_line(road, s0, s1, t)))
    for side in (1, -1):
        if road.name == BUS_BAY["road"] and side == -1 and s0 < BUS_BAY["outline"][0][0] < s1:
            a, c = BUS_BAY["outline"][0][0], BUS_BAY["outline"][-1][0]
            depth = -min(t for _, t in BUS_BAY["outline"])
            for p, q, t0 in ((s0, a, road.half), (a, c, road.half + depth), (c, s1, road.half)):
                b.add("walkway", polygon_token=b.polygon(road.rect(p, q, -t0 - WALKWAY, -t0)))
            bay = [road.xy(s, -road.half + t) for s, t in BUS_BAY["outline"]]
            b.add("lane", polygon_token=b.polygon(bay if _ccw(bay) else bay[::-1]), lane_type="CAR",
                  from_edge_line_token="", to_edge_line_token="",
                  left_lane_divider_segments=[], right_lane_divider_segments=[])
            continue
        b.add("walkway", polygon_token=b.polygon(road.rect(s0, s1, side * road.half, side * (road.half + WALKWAY))))


def _arm(b: MapBuilder, road: Road, edge: float, sign: int) -> None:
    """Crossing, stop line for the incoming lanes, on the arm of ``road`` leaving an intersection at ``edge``."""
    c0, c1 = edge + sign * CROSSING[0], edge + sign * CROSSING[1]
    outline = road.rect(min(c0, c1), max(c0, c1), -road.half, road.half)
    crossing = b.add("ped_crossing", polygon_token=b.polygon(outline), road_segment_token="")
    l0, l1 = edge + sign * STOP_LINE[0], edge + sign * STOP_LINE[1]
    t0, t1 = (0.0, road.half) if sign > 0 else (-road.half, 0.0)
    b.add("stop_line", polygon_token=b.polygon(road.rect(min(l0, l1), max(l0, l1), t0, t1)),
          stop_line_type="PED_CROSSING", ped_crossing_tokens=[crossing], traffic_light_tokens=[], road_block_token="")


def build_town(name: str = "synth-town") -> Town:
    b = MapBuilder(name, CANVAS)
    town = Town(b)
    drivable: list[str] = []
    h_roads = [r for r in ROADS if r.axis == "h"]
    v_roads = [r for r in ROADS if r.axis == "v"]
    cuts: dict[str, list[tuple[float, float]]] = {r.name: [] for r in ROADS}
    for h in h_roads:
        for v in v_roads:
            cuts[h.name].append((v.at - v.half, v.at + v.half))
            cuts[v.name].append((h.at - h.half, h.at + h.half))
            square = h.rect(v.at - v.half, v.at + v.half, -h.half, h.half)
            b.add("road_segment", polygon_token=b.polygon(square), is_intersection=True, drivable_area_token="")
            drivable.append(b.polygon(h.rect(v.at - v.half - 0.5, v.at + v.half + 0.5, -h.half - 0.5, h.half + 0.5)))
            b.add("lane_connector", polygon_token=b.polygon(h.rect(v.at - v.half, v.at + v.half, -h.lane_width, 0.0)))
            for road, centre, other in ((h, v.at, v), (v, h.at, h)):
                for sign in (1, -1):
                    _arm(b, road, centre + sign * other.half, sign)
            town.nodes[f"{h.name}x{v.name}"] = np.array(h.xy(v.at, 0.0))
    for road in ROADS:
        for s0, s1 in _pieces(road, sorted(cuts[road.name])):
            _segment(b, road, s0, s1, drivable)
        # graph: the road's intersections and its two dead ends, in order along it
        stops = [(road.start, f"{road.name}:start"), (road.end, f"{road.name}:end")]
        for other in (v_roads if road.axis == "h" else h_roads):
            key = f"{road.name}x{other.name}" if road.axis == "h" else f"{other.name}x{road.name}"
            stops.append((other.at, key))
        stops.sort()
        for s, key in stops:
            town.nodes.setdefault(key, np.array(road.xy(s, 0.0)))
        for (_, a), (_, c) in zip(stops[:-1], stops[1:]):
            town.link(a, c)
    park = next(r for r in ROADS if r.name == CARPARK["road"])
    s0, s1 = CARPARK["s"]
    t0 = park.half + WALKWAY
    carpark = b.polygon(park.rect(s0, s1, t0, t0 + CARPARK["depth"]))
    b.add("carpark_area", polygon_token=carpark, orientation=0.0, road_block_token="")
    drivable.append(b.polygon(park.rect(s0, s1, t0, t0 + CARPARK["depth"])))
    b.add("drivable_area", polygon_tokens=drivable)
    return town
