"""Synthetic "shapes" data for the embedded demo, written in the real on-disk formats.

Images hold 2 to 4 non-overlapping circles, squares and triangles in four colours on a lightly
textured background. ``write_dataset`` writes a ReasonSeg tree (``reason_seg/ReasonSeg/<split>/``
``*.jpg`` + LabelMe-like ``*.json``) and a LLaVA VQA file (``llava_dataset/synth_vqa.json``, images in
``coco/train2017/``), so the loaders of the real datasets read it unchanged.

Every shape is drawn by filling its integer polygon exactly as the original ReasonSeg loader
rasterises it (``cv2.polylines`` thickness 1, then ``cv2.fillPoly``), so the JSON polygon and the
rendered pixels agree exactly (JPEG only blurs the border a little). A query is only emitted when
its answer is unique; objects that are nearly as good an answer are written as ``ignore`` polygons.
Each image is drawn from its own generator seeded by ``(seed, split, index)``: the same seed gives
byte-identical files, and changing one split's size leaves the other splits unchanged.

Train on it with ``--dataset_dir DIR --dataset "reason_seg||vqa" --reason_seg_data "ReasonSeg|train"
--vqa_data synth_vqa --val_dataset "ReasonSeg|val"``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 200, 40)}
# Light, low-saturation tones (blue channel high) so no background pixel resembles a shape colour.
BACKGROUNDS = ((236, 234, 228), (226, 230, 236), (232, 232, 232), (238, 232, 222), (228, 234, 230))
SIDE_RANGE = (96, 320)
CIRCLE_VERTICES = 40
GAP = 3  # free pixels between the bounding boxes of two shapes
JPEG_QUALITY = 95
SPLITS = {"train": 0, "val": 1, "test": 2}
_VQA_STREAM, _FRESH_STREAM = 3, 4
VQA_NAME = "synth_vqa"

# Margins for "a clear winner": size is compared as an area ratio, position (of the centroids) in
# units of the typical shape side (sqrt of the mean area). A query needs the winner ahead by EMIT;
# the other shapes closer than IGNORE to the winner become "ignore" polygons.
SIZE_EMIT, SIZE_IGNORE = 1.3, 1.6
POS_EMIT, POS_IGNORE = 0.6, 1.2

# Question families and how often a ReasonSeg file asks each (renormalised over the families an
# image allows): half about colour and kind, the rest split between size and position.
FAMILY_WEIGHTS = {"colour_shape": 0.25, "colour": 0.15, "not_colour": 0.1, "largest": 0.1, "smallest": 0.1,
                  "leftmost": 0.075, "rightmost": 0.075, "topmost": 0.075, "bottommost": 0.075}
FAMILIES = tuple(FAMILY_WEIGHTS)
_ORDINAL_TEXTS = {  # family -> (phrases for the short template, full sentences)
    "largest": (("largest shape", "biggest shape", "shape with the largest area"),
                ("Segment the largest shape.", "Which shape is the biggest?",
                 "Which shape covers the most area?")),
    "smallest": (("smallest shape", "tiniest shape", "shape with the smallest area"),
                 ("Segment the smallest shape.", "Which shape is the smallest?",
                  "Which shape covers the least area?")),
    "leftmost": (("leftmost shape", "shape furthest to the left", "shape on the far left"),
                 ("Segment the leftmost shape.", "Which shape is furthest to the left?",
                  "Which shape is closest to the left edge of the image?")),
    "rightmost": (("rightmost shape", "shape furthest to the right", "shape on the far right"),
                  ("Segment the rightmost shape.", "Which shape is furthest to the right?",
                   "Which shape is closest to the right edge of the image?")),
    "topmost": (("topmost shape", "highest shape", "shape nearest the top"),
                ("Segment the topmost shape.", "Which shape is highest in the image?",
                 "Which shape is closest to the top edge of the image?")),
    "bottommost": (("bottommost shape", "lowest shape", "shape nearest the bottom"),
                   ("Segment the bottommost shape.", "Which shape is lowest in the image?",
                    "Which shape is closest to the bottom edge of the image?")),
}
_COLOUR_SHAPE_TEXTS = (("{c} {s}", "{s} that is {c}", "{c} coloured {s}"),
                       ("Segment the {c} {s}.", "Where is the {c} {s}?", "Find the {c} {s} in this picture."))
_COLOUR_TEXTS = (("{c} shape", "shape that is {c}", "{c} object"),
                 ("Which shape is {c}?", "Segment the {c} shape.", "Which object is coloured {c}?"))
_NOT_COLOUR_TEXTS = (("{s} that is not {c}", "non-{c} {s}"),
                     ("Segment the {s} that is not {c}.", "Which {s} is not {c}?",
                      "Find the {s} whose colour is not {c}."))


@dataclass(frozen=True)
class ShapeRecord:
    """One drawn shape. ``points`` are the integer polygon vertices (x, y) that were filled;
    ``bbox`` is (x0, y0, x1, y1) inclusive; ``area`` and ``centroid`` are over its pixels."""

    shape: str
    colour: str
    rgb: tuple[int, int, int]
    points: tuple[tuple[int, int], ...]
    bbox: tuple[int, int, int, int]
    area: int
    centroid: tuple[float, float]

    def mask(self, height: int, width: int) -> np.ndarray:
        return polygon_mask(self.points, height, width)


class Query(NamedTuple):
    text: str
    is_sentence: bool
    target: int
    ignore: tuple[int, ...]


@dataclass(frozen=True)
class QueryCandidate:
    """A uniquely answerable question about an image and all its phrasings in both styles."""

    family: str
    target: int
    ignore: tuple[int, ...]
    phrases: tuple[str, ...]  # noun phrases for "Can you segment the {} in this image?" (is_sentence false)
    sentences: tuple[str, ...]  # full sentences (is_sentence true)


def polygon_mask(points, height: int, width: int) -> np.ndarray:
    """Boolean mask of a polygon rasterised as the original ReasonSeg loader does (int32 truncation,
    polylines of thickness 1, then fillPoly)."""
    canvas = np.zeros((height, width), np.uint8)
    pts = np.array([points], dtype=np.int32)
    cv2.polylines(canvas, pts, True, 1, 1)
    cv2.fillPoly(canvas, pts, 1)
    return canvas.astype(bool)


def _outline(shape: str, size: float, angle: float) -> np.ndarray:
    """Integer vertices around (0, 0). ``size`` is the radius of a circle of the same area, so the
    three kinds are comparable in size."""
    if shape == "circle":
        t = 2 * math.pi * np.arange(CIRCLE_VERTICES) / CIRCLE_VERTICES
        pts = np.stack([size * np.cos(t), size * np.sin(t)], axis=1)
    elif shape == "square":
        h = size * math.sqrt(math.pi) / 2
        pts = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    elif shape == "triangle":
        r = size * math.sqrt(4 * math.pi / (3 * math.sqrt(3)))  # circumradius of an equal-area triangle
        t = -math.pi / 2 + 2 * math.pi * np.arange(3) / 3
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        pts = pts @ np.array([[c, s], [-s, c]])
    pts = np.floor(pts).astype(np.int64)
    keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
    return pts[keep]


@functools.lru_cache(maxsize=1)
def _grain_tile() -> np.ndarray:
    """Fine grain (0..8, mean 4) shared by all images; each image uses a random crop of it."""
    side = 2 * SIDE_RANGE[1]
    grain = np.random.default_rng(20240917).normal(4, 2.5, (side, side, 1))
    return np.ascontiguousarray(np.clip(grain, 0, 8).astype(np.uint8).repeat(3, axis=2))


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    base = np.array(BACKGROUNDS[rng.integers(len(BACKGROUNDS))]) - 4 + rng.integers(-6, 7, 3)
    coarse = np.clip(base + rng.normal(0, 6, (4, 4, 3)), 0, 255).astype(np.uint8)
    low = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    tile = _grain_tile()
    y, x = (int(v) for v in rng.integers(0, tile.shape[0] - max(width, height) + 1, 2))
    return cv2.add(low, tile[y:y + height, x:x + width])


def generate_image(rng: np.random.Generator, size: tuple[int, int] | None = None,
                   n_shapes: int | None = None) -> tuple[Image.Image, list[ShapeRecord]]:
    """Draw one image. ``size`` is (width, height), random and non-square by default; ``n_shapes``
    is 2 to 4 by default (fewer are drawn if they do not fit)."""
    if size is None:
        while True:
            width, height = (int(v) for v in rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, 2))
            if abs(width - height) >= 8:
                break
    else:
        width, height = size
        if min(width, height) < 48:
            raise ValueError(f"image size {size} is too small for shapes; both sides must be >= 48")
    n = int(rng.integers(2, 5)) if n_shapes is None else n_shapes
    if not 1 <= n <= 8:
        raise ValueError(f"n_shapes must be between 1 and 8, got {n}")
    side = min(width, height)
    sizes = sorted(rng.uniform(max(7.0, 0.06 * side), 0.2 * side, n), reverse=True)
    image = _background(rng, width, height)
    boxes: list[tuple[int, int, int, int]] = []
    records: list[ShapeRecord] = []
    for radius in sizes:
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        angle = 0.0 if shape == "circle" else math.radians(rng.uniform(-15, 15))
        placed = None
        for attempt in range(40):
            if attempt % 10 == 0:  # shrink the shape after every 10 failed placements
                pts = _outline(shape, radius * 0.8 ** (attempt // 10), angle)
                lo, hi = pts.min(0), pts.max(0)
            x_range, y_range = (1 - lo[0], width - 2 - hi[0]), (1 - lo[1], height - 2 - hi[1])
            if x_range[0] > x_range[1] or y_range[0] > y_range[1]:
                continue
            cx = int(rng.integers(x_range[0], x_range[1] + 1))
            cy = int(rng.integers(y_range[0], y_range[1] + 1))
            box = (cx + lo[0], cy + lo[1], cx + hi[0], cy + hi[1])
            if all(box[0] > b[2] + GAP or box[2] < b[0] - GAP or box[1] > b[3] + GAP or box[3] < b[1] - GAP
                   for b in boxes):
                placed = pts + (cx, cy), tuple(int(v) for v in box)
                break
        if placed is None:
            continue
        pts, box = placed
        x0, y0, x1, y1 = box
        # The polygon lies inside its box, so rasterising in the box window gives the same pixels.
        mask = polygon_mask(pts - (x0, y0), y1 - y0 + 1, x1 - x0 + 1)
        rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + rng.integers(-12, 13, 3), 0, 255))
        image[y0:y1 + 1, x0:x1 + 1][mask] = rgb
        m = cv2.moments(mask.view(np.uint8), binaryImage=True)
        boxes.append(box)
        records.append(ShapeRecord(shape, colour, rgb, tuple((int(x), int(y)) for x, y in pts), box,
                                   int(m["m00"]), (x0 + m["m10"] / m["m00"], y0 + m["m01"] / m["m00"])))
    return Image.fromarray(image), records


def _winner(keys: list[float], emit: float, ignore: float) -> tuple[int, tuple[int, ...]] | None:
    """Index of the largest key if it leads every other by ``emit``; others within ``ignore``."""
    order = sorted(range(len(keys)), key=lambda i: -keys[i])
    best = order[0]
    if keys[best] - keys[order[1]] < emit:
        return None
    return best, tuple(sorted(i for i in order[1:] if keys[best] - keys[i] < ignore))


def query_candidates(shapes: list[ShapeRecord]) -> list[QueryCandidate]:
    """Every question with a unique answer about these shapes, in a fixed order."""
    out: list[QueryCandidate] = []
    if len(shapes) < 2:
        return out

    def add(family, target, ignore, texts, **fmt):
        phrases, sentences = texts
        out.append(QueryCandidate(family, target, tuple(ignore), tuple(p.format(**fmt) for p in phrases),
                                  tuple(s.format(**fmt) for s in sentences)))

    for s in SHAPES:
        for c in COLOURS:
            hits = [i for i, r in enumerate(shapes) if r.shape == s and r.colour == c]
            if len(hits) == 1:
                add("colour_shape", hits[0], (), _COLOUR_SHAPE_TEXTS, c=c, s=s)
    for c in COLOURS:
        hits = [i for i, r in enumerate(shapes) if r.colour == c]
        if len(hits) == 1:
            add("colour", hits[0], (), _COLOUR_TEXTS, c=c)
    for s in SHAPES:
        for c in COLOURS:
            same = [i for i, r in enumerate(shapes) if r.shape == s]
            others = [i for i in same if shapes[i].colour != c]
            if len(others) == 1 and len(same) > 1:  # "not c" only makes sense if some s is c
                add("not_colour", others[0], (), _NOT_COLOUR_TEXTS, c=c, s=s)

    log_area = [math.log(r.area) for r in shapes]
    for family, keys, emit, ign in (("largest", log_area, SIZE_EMIT, SIZE_IGNORE),
                                    ("smallest", [-k for k in log_area], SIZE_EMIT, SIZE_IGNORE)):
        won = _winner(keys, math.log(emit), math.log(ign))
        if won:
            add(family, won[0], won[1], _ORDINAL_TEXTS[family])
    scale = math.sqrt(sum(r.area for r in shapes) / len(shapes))  # typical shape side, in pixels
    # (family, centroid key, bbox edge key): the winner must also be extreme by its bounding box.
    for family, key, edge in (
        ("leftmost", lambda r: -r.centroid[0], lambda r: -r.bbox[0]),
        ("rightmost", lambda r: r.centroid[0], lambda r: r.bbox[2]),
        ("topmost", lambda r: -r.centroid[1], lambda r: -r.bbox[1]),
        ("bottommost", lambda r: r.centroid[1], lambda r: r.bbox[3]),
    ):
        won = _winner([key(r) for r in shapes], POS_EMIT * scale, POS_IGNORE * scale)
        if won and all(edge(shapes[won[0]]) > edge(r) for i, r in enumerate(shapes) if i != won[0]):
            add(family, won[0], won[1], _ORDINAL_TEXTS[family])
    return out


def make_queries(shapes: list[ShapeRecord], rng: np.random.Generator, per_question: int = 1) -> list[Query]:
    """For every uniquely answerable question, ``per_question`` phrasings drawn from both styles."""
    out = []
    for cand in query_candidates(shapes):
        pool = [(t, False) for t in cand.phrases] + [(t, True) for t in cand.sentences]
        for j in rng.permutation(len(pool))[:per_question]:
            out.append(Query(pool[j][0], pool[j][1], cand.target, cand.ignore))
    return out


def _image_with_questions(rng: np.random.Generator):
    for _ in range(100):
        image, shapes = generate_image(rng)
        cands = query_candidates(shapes)
        if cands:
            return image, shapes, cands
    raise RuntimeError("could not draw an image with an answerable question in 100 tries")


def _choose(rng: np.random.Generator, cands: list[QueryCandidate]) -> tuple[QueryCandidate, bool, list[str]]:
    """One question for a ReasonSeg file: a family by FAMILY_WEIGHTS, then uniform over its
    questions, the style and the phrasings."""
    families = [f for f in FAMILIES if any(c.family == f for c in cands)]
    weights = np.array([FAMILY_WEIGHTS[f] for f in families])
    family = families[rng.choice(len(families), p=weights / weights.sum())]
    same = [c for c in cands if c.family == family]
    cand = same[rng.integers(len(same))]
    is_sentence = bool(rng.random() < 0.5)
    pool = cand.sentences if is_sentence else cand.phrases
    k = min(len(pool), int(rng.integers(2, 4)))
    return cand, is_sentence, [pool[j] for j in rng.permutation(len(pool))[:k]]


def reason_seg_sample(seed: int, split: str, index: int) -> tuple[Image.Image, list[ShapeRecord], dict]:
    """The image, its shapes and the ReasonSeg JSON of file ``index`` of ``split``."""
    image, shapes, record, _ = _reason_seg_sample(seed, split, index)
    return image, shapes, record


def _reason_seg_sample(seed: int, split: str, index: int):
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    rng = np.random.default_rng([seed, SPLITS[split], index])
    image, shapes, cands = _image_with_questions(rng)
    cand, is_sentence, texts = _choose(rng, cands)

    def polygon(i, label):
        points = [[float(x), float(y)] for x, y in shapes[i].points]
        return {"label": label, "points": points, "shape_type": "polygon"}

    record = {"text": texts, "is_sentence": is_sentence,
              "shapes": [polygon(cand.target, "target")] + [polygon(i, "ignore") for i in cand.ignore]}
    return image, shapes, record, cand.family


def vqa_sample(seed: int, index: int, max_turns: int = 3
               ) -> tuple[Image.Image, list[ShapeRecord], list[dict]]:
    """The image, its shapes and the LLaVA conversation of VQA item ``index``."""
    rng = np.random.default_rng([seed, _VQA_STREAM, index])
    image, shapes = generate_image(rng)
    qa = [("How many shapes are there?", str(len(shapes)))]
    for s in SHAPES:
        same = [r for r in shapes if r.shape == s]
        if len(same) == 1:
            qa.append((f"What colour is the {s}?", f"{same[0].colour.capitalize()}."))
        qa.append((f"How many {s}s are there?", str(len(same))))
    turns = []
    for n, j in enumerate(rng.permutation(len(qa))[:max_turns]):
        question, answer = qa[j]
        turns.append({"from": "human", "value": ("<image>\n" if n == 0 else "") + question})
        turns.append({"from": "gpt", "value": answer})
    return image, shapes, turns


def sample_fresh(seed: int) -> tuple[Image.Image, list[ShapeRecord], list[Query]]:
    """An image from a stream no dataset split uses, its shapes and one phrasing per question."""
    rng = np.random.default_rng([seed, _FRESH_STREAM])
    image, shapes, _ = _image_with_questions(rng)
    return image, shapes, make_queries(shapes, rng)


def sample_fresh_image(seed: int) -> tuple[Image.Image, list[Query]]:
    image, _, queries = sample_fresh(seed)
    return image, queries


def save_jpeg(image: Image.Image, path: Path) -> None:
    image.save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def remove_stale(folder: Path, prefix: str, keep: set[str], suffixes: tuple[str, ...] = (".jpg", ".json")) -> None:
    """Drop files of an earlier, larger run (same naming) so the loaders' globs see this run only."""
    if folder.is_dir():
        for path in folder.glob(prefix + "*"):
            if path.suffix in suffixes and path.name not in keep:
                path.unlink()


def write_dataset(out, n_train: int, n_val: int, seed: int, n_test: int = 0, n_vqa: int | None = None,
                  progress: bool = True) -> dict:
    """Write the ReasonSeg splits and the LLaVA VQA file under ``out``; return a summary.
    ``n_vqa`` defaults to ``n_train``."""
    n_vqa = n_train if n_vqa is None else n_vqa
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test), ("n_vqa", n_vqa),
                        ("seed", seed)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    root = Path(out)
    seg_root = root / "reason_seg" / "ReasonSeg"
    counts = {"train": n_train, "val": n_val, "test": n_test}
    families: dict[str, dict[str, int]] = {}
    bar = tqdm(total=n_train + n_val + n_test + n_vqa, desc="synth", unit="img", disable=not progress)
    for split, n in counts.items():
        folder = seg_root / split
        prefix = f"synth_{split}_"
        remove_stale(folder, prefix, {f"{prefix}{i:06d}{e}" for i in range(n) for e in (".jpg", ".json")})
        if n == 0:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        tally = families.setdefault(split, {})
        for i in range(n):
            image, _, record, family = _reason_seg_sample(seed, split, i)
            save_jpeg(image, folder / f"{prefix}{i:06d}.jpg")
            (folder / f"{prefix}{i:06d}.json").write_text(json.dumps(record) + "\n", encoding="utf-8")
            tally[family] = tally.get(family, 0) + 1
            bar.update()

    image_dir = root / "coco" / "train2017"
    remove_stale(image_dir, "synth_vqa_", {f"synth_vqa_{i:06d}.jpg" for i in range(n_vqa)})
    if n_vqa:
        image_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n_vqa):
        image, _, turns = vqa_sample(seed, i)
        name = f"synth_vqa_{i:06d}.jpg"
        save_jpeg(image, image_dir / name)
        items.append({"id": f"synth_vqa_{i:06d}", "image": name, "conversations": turns})
        bar.update()
    bar.close()
    vqa_json = root / "llava_dataset" / f"{VQA_NAME}.json"
    if n_vqa:
        vqa_json.parent.mkdir(parents=True, exist_ok=True)
        vqa_json.write_text(json.dumps(items, indent=1) + "\n", encoding="utf-8")
    elif vqa_json.is_file():
        vqa_json.unlink()
    return {"root": str(root), "seed": seed, "reason_seg": counts, "vqa": n_vqa,
            "vqa_json": str(vqa_json) if n_vqa else None, "families": families,
            "reason_seg_data": "ReasonSeg|train", "val_dataset": "ReasonSeg|val", "vqa_data": VQA_NAME}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lisa data synth",
        description="Write the synthetic shapes dataset (ReasonSeg tree + LLaVA VQA JSON) used by the demo.")
    parser.add_argument("--out", required=True, help="dataset root (the --dataset_dir of training)")
    parser.add_argument("--n_train", "--n-train", type=int, default=1000, help="ReasonSeg train images")
    parser.add_argument("--n_val", "--n-val", type=int, default=100, help="ReasonSeg val images")
    parser.add_argument("--n_test", "--n-test", type=int, default=0, help="ReasonSeg test images")
    parser.add_argument("--n_vqa", "--n-vqa", type=int, default=None, help="VQA items (default: n_train)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name in ("n_train", "n_val", "n_test", "n_vqa", "seed"):
        value = getattr(args, name)
        if value is not None and value < 0:
            parser.error(f"--{name} must be >= 0, got {value}")
    summary = write_dataset(args.out, args.n_train, args.n_val, args.seed, n_test=args.n_test,
                            n_vqa=args.n_vqa, progress=not args.quiet)
    counts = summary["reason_seg"]
    print(f"wrote {summary['root']}: ReasonSeg train {counts['train']}, val {counts['val']}, "
          f"test {counts['test']}; VQA {summary['vqa']}" + (f" ({summary['vqa_json']})" if summary["vqa"] else ""))
    return 0
