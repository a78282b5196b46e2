"""Where the synthetic car drives: random walks on the town's road graph, in the right-hand lane.

A route is a walk along road centre lines that never turns back (a dead end ends it, and another walk
is drawn), with its corners rounded (radius ``CORNER`` m), offset to the right by the lane offset. The car
moves along it at a constant speed; a pose at time t is the point at the travelled distance with the
heading of the path there.
"""

from __future__ import annotations

import numpy as np
from shapely.geometry import LineString

from lisa.map.synth.town import Town

CORNER = 9.0  # metres: radius of rounded corners


def _round_corners(points: np.ndarray) -> np.ndarray:
    out = [points[0]]
    for prev, cur, nxt in zip(points[:-2], points[1:-1], points[2:]):
        a, b = cur - prev, nxt - cur
        la, lb = np.linalg.norm(a), np.linalg.norm(b)
        if abs(a[0] * b[1] - a[1] * b[0]) < 1e-9 * la * lb:  # straight through
            out.append(cur)
            continue
        r = min(CORNER, la / 2, lb / 2)
        p0, p2 = cur - a / la * r, cur + b / lb * r
        t = np.linspace(0.0, 1.0, 9)[:, None]  # quadratic curve from p0 to p2 with control point at the corner
        out.extend((1 - t) ** 2 * p0 + 2 * (1 - t) * t * cur + t ** 2 * p2)
    out.append(points[-1])
    return np.asarray(out)


def random_route(town: Town, rng: np.random.Generator, length: float, tries: int = 200) -> LineString:
    """A centre-line walk of at least ``length`` metres that never turns back."""
    edges = [(a, b) for a, nbrs in town.edges.items() for b in nbrs]
    for _ in range(tries):
        a, b = edges[rng.integers(len(edges))]
        walk = [a, b]
        total = float(np.linalg.norm(town.nodes[b] - town.nodes[a]))
        while total < length:
            choices = [n for n in town.edges[walk[-1]] if n != walk[-2]]
            if not choices:
                break
            nxt = choices[rng.integers(len(choices))]
            total += float(np.linalg.norm(town.nodes[nxt] - town.nodes[walk[-1]]))
            walk.append(nxt)
        if total >= length:
            return LineString(_round_corners(np.array([town.nodes[n] for n in walk])))
    raise RuntimeError(f"no walk of {length:.0f} m found in the town")


def lane_path(route: LineString, offset: float) -> LineString:
    """The route moved ``offset`` metres to its right (right-hand traffic), same direction."""
    return route.offset_curve(-offset, join_style="round")


def pose_at(path: LineString, distance: float) -> tuple[np.ndarray, float]:
    """Position (x, y) and heading (radians) at ``distance`` metres along ``path``."""
    p = np.asarray(path.interpolate(distance).coords[0])
    a = np.asarray(path.interpolate(max(distance - 0.5, 0.0)).coords[0])
    b = np.asarray(path.interpolate(min(distance + 0.5, path.length)).coords[0])
    d = b - a
    return p, float(np.arctan2(d[1], d[0]))
