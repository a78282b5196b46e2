"""Pictures of the synthetic town: a ground texture, camera images cast from it, LiDAR points, the prior.

The texture is drawn once from the map expansion itself (so images and GT cannot disagree): grass
background, light walkways, mid-grey car park, dark road surface (road segments and lanes), light kerbs
along the road boundary and on islands, zebra-striped crossings, dashed white lane dividers, a yellow
road divider, white stop lines. A camera image casts one ray per pixel (2 x 2 per output pixel) to the
ground plane z = 0 and samples the texture bilinearly; rays above the horizon see the sky, distance
fades to haze. LiDAR points are the ground hits of 32 beams, with the texture's brightness as intensity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from PIL import Image, ImageDraw
from shapely.geometry import Polygon
from shapely.ops import substring

from lisa.map.nuscenes.expansion import MapExpansion

COLOURS = {"ground": (86, 112, 70), "walkway": (168, 166, 158), "carpark": (104, 104, 108), "road": (58, 60, 64),
           "kerb": (205, 203, 196), "island": (180, 178, 170), "white": (235, 235, 230), "yellow": (222, 180, 40),
           "sky": (150, 185, 225), "haze": (170, 180, 190)}
KERB_WIDTH, LINE_WIDTH = 0.3, 0.2  # metres
DASH = (3.0, 3.0)  # metres painted, metres gap
STRIPE = 0.6  # metres: zebra stripe width (the gap is as wide)
ISLAND_AREA = 500.0  # square metres: holes in the road surface smaller than this are drawn as islands


@dataclass
class Texture:
    image: np.ndarray  # [H, W, 3] uint8, row 0 at the top (largest y), with a 1-pixel ground-coloured border
    resolution: float  # metres per pixel

    def sample(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bilinear colour (float32) at map coordinates; outside the canvas: the ground colour."""
        h, w = self.image.shape[:2]
        col = np.clip(x / self.resolution + 0.5, 0.0, w - 1.001)  # +1 border -0.5 pixel centre
        row = np.clip(h - 1.5 - y / self.resolution, 0.0, h - 1.001)
        c0, r0 = col.astype(np.int64), row.astype(np.int64)
        fc, fr = (col - c0).astype(np.float32)[..., None], (row - r0).astype(np.float32)[..., None]
        flat = self.image.reshape(-1, 3)
        i = r0 * w + c0
        top = flat[i] * (1 - fc) + flat[i + 1] * fc
        bottom = flat[i + w] * (1 - fc) + flat[i + w + 1] * fc
        return top * (1 - fr) + bottom * fr


def _pixels(coords, height_px: int, res: float) -> list[tuple[float, float]]:
    a = np.asarray(coords)[:, :2]
    return [(float(x / res), float(height_px - y / res)) for x, y in a]


def draw_texture(m: MapExpansion, resolution: float = 0.1) -> Texture:
    w, h = int(np.ceil(m.canvas_edge[0] / resolution)), int(np.ceil(m.canvas_edge[1] / resolution))
    img = Image.new("RGB", (w, h), COLOURS["ground"])
    d = ImageDraw.Draw(img)

    def poly(p: Polygon, colour) -> None:
        d.polygon(_pixels(p.exterior.coords, h, resolution), fill=colour)

    def line(coords, colour, width_m: float) -> None:
        d.line(_pixels(coords, h, resolution), fill=colour, width=max(1, round(width_m / resolution)), joint="curve")

    for p in m.layer_polygons("walkway"):
        poly(p, COLOURS["walkway"])
    for p in m.layer_polygons("carpark_area"):
        poly(p, COLOURS["carpark"])
    surfaces = [p for layer in ("road_segment", "lane") for p in m.layer_polygons(layer) if p.is_valid]
    for p in surfaces:
        poly(p, COLOURS["road"])
    union = shapely.union_all(surfaces) if surfaces else Polygon()
    for part in shapely.get_parts(union):
        if part.geom_type != "Polygon":
            continue
        for hole in part.interiors:  # small holes are raised islands; large ones are city blocks
            if Polygon(hole).area < ISLAND_AREA:
                d.polygon(_pixels(hole.coords, h, resolution), fill=COLOURS["island"])
        for ring in (part.exterior, *part.interiors):
            line(ring.coords, COLOURS["kerb"], KERB_WIDTH)
    for p in m.layer_polygons("ped_crossing"):
        rect = np.asarray(p.minimum_rotated_rectangle.exterior.coords)
        edges = [rect[1] - rect[0], rect[2] - rect[1]]
        long_axis = max(edges, key=np.linalg.norm)
        u = long_axis / np.linalg.norm(long_axis)
        start = min(float(np.dot(q, u)) for q in rect)
        length = float(np.linalg.norm(long_axis))
        normal = np.array([-u[1], u[0]])
        for k in range(int(length / (2 * STRIPE)) + 1):
            a = start + (2 * k + 0.5) * STRIPE
            band = np.array([u * a - normal * 1e3, u * (a + STRIPE) - normal * 1e3,
                             u * (a + STRIPE) + normal * 1e3, u * a + normal * 1e3])
            for piece in shapely.get_parts(p.intersection(Polygon(band))):
                if piece.geom_type == "Polygon" and not piece.is_empty:
                    poly(piece, COLOURS["white"])
    for ln in m.layer_lines("lane_divider"):
        for k in range(int(ln.length / sum(DASH)) + 1):
            dash = substring(ln, k * sum(DASH), k * sum(DASH) + DASH[0])
            if dash.length > 0:
                line(dash.coords, COLOURS["white"], LINE_WIDTH)
    for ln in m.layer_lines("road_divider"):
        line(ln.coords, COLOURS["yellow"], LINE_WIDTH)
    for p in m.layer_polygons("stop_line"):
        poly(p, COLOURS["white"])
    padded = np.empty((h + 2, w + 2, 3), np.uint8)
    padded[:] = COLOURS["ground"]
    padded[1:-1, 1:-1] = np.asarray(img)
    return Texture(padded, resolution)


def render_camera(texture: Texture, intrinsic: np.ndarray, cam2global: np.ndarray, width: int, height: int,
                  rng: np.random.Generator | None = None, supersample: int = 2) -> np.ndarray:
    """``[height, width, 3]`` uint8 image of the ground texture seen by a pinhole camera."""
    ss = supersample
    u = ((np.arange(width * ss, dtype=np.float32) + 0.5) / ss)[None, :, None]
    v = ((np.arange(height * ss, dtype=np.float32) + 0.5) / ss)[:, None, None]
    m = (cam2global[:3, :3] @ np.linalg.inv(np.asarray(intrinsic, dtype=np.float64))).T.astype(np.float32)
    rays = (u * m[0] + v * m[1] + m[2]).reshape(-1, 3)  # pixel (u, v, 1) -> direction in the map frame
    rays /= np.sqrt(np.einsum("ij,ij->i", rays, rays))[:, None]
    origin = cam2global[:3, 3]
    # sky: a gradient from haze at the horizon to blue above
    up = np.clip(3 * rays[:, 2:3], 0.0, 1.0).astype(np.float32)
    colour = np.array(COLOURS["haze"], np.float32) * (1 - up) + np.array(COLOURS["sky"], np.float32) * up
    down = np.nonzero(rays[:, 2] < -1e-6)[0]
    dist = -origin[2] / rays[down, 2]
    ground = texture.sample(origin[0] + dist * rays[down, 0], origin[1] + dist * rays[down, 1])
    fog = np.clip(dist / 160.0, 0.0, 1.0).astype(np.float32)[:, None]
    colour[down] = ground * (1 - fog) + np.array(COLOURS["haze"], np.float32) * fog
    colour = colour.reshape(height, ss, width, ss, 3).mean(axis=(1, 3))
    if rng is not None:
        colour += rng.normal(0.0, 3.0, colour.shape).astype(np.float32)
    return np.clip(colour + 0.5, 0, 255).astype(np.uint8)


def lidar_points(texture: Texture, lidar2global: np.ndarray, azimuth_step: float = 2.0, max_range: float = 70.0,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """``[N, 5]`` float32 (x, y, z, intensity, ring) in the LiDAR frame: the ground hits of 32 beams."""
    elevation = np.radians(np.linspace(-30.67, 10.67, 32))
    azimuth = np.radians(np.arange(0.0, 360.0, azimuth_step))
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    rays = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)
    ring = np.repeat(np.arange(32), len(azimuth))
    world = rays @ lidar2global[:3, :3].T
    origin = lidar2global[:3, 3]
    down = world[:, 2] < -1e-6
    s = -origin[2] / np.where(down, world[:, 2], -1.0)
    keep = down & (s < max_range)
    hits = origin + s[keep, None] * world[keep]
    if rng is not None:
        hits[:, 2] += rng.normal(0.0, 0.01, len(hits))
    intensity = texture.sample(hits[:, 0], hits[:, 1]).mean(axis=1) / 2.55  # 0..100, markings brightest
    local = (hits - origin) @ lidar2global[:3, :3]
    return np.column_stack([local, intensity, ring[keep]]).astype(np.float32)


def semantic_prior(m: MapExpansion, resolution: float = 0.1) -> Image.Image:
    """The drivable-area mask the devkit reads as the map's semantic prior (255 drivable, 0 elsewhere)."""
    w, h = int(np.ceil(m.canvas_edge[0] / resolution)), int(np.ceil(m.canvas_edge[1] / resolution))
    img = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(img)
    for p in m.layer_polygons("drivable_area"):
        d.polygon(_pixels(p.exterior.coords, h, resolution), fill=255)
    return img

