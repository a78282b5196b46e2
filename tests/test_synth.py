"""The synthetic shapes dataset: polygons match pixels, queries have one right answer, the files are
deterministic and in the ReasonSeg / LLaVA formats."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from lisa.demo import shapes as synth

SHAPE_WORDS = ("circle", "square", "triangle")
COLOUR_WORDS = ("red", "green", "blue", "yellow")


def original_mask(json_path: Path, height: int, width: int) -> np.ndarray:
    """The {0, 1, 255} mask the original ReasonSeg loader builds from a JSON file."""
    record = json.loads(json_path.read_text(encoding="utf-8"))
    polys = []
    for shape in record["shapes"]:
        if shape["label"].lower() == "flag":
            continue
        tmp = np.zeros((height, width), np.uint8)
        cv2.polylines(tmp, np.array([shape["points"]], dtype=np.int32), True, 1, 1)
        cv2.fillPoly(tmp, np.array([shape["points"]], dtype=np.int32), 1)
        polys.append((int(tmp.sum()), shape))
    mask = np.zeros((height, width), np.uint8)
    for _, shape in sorted(polys, key=lambda t: t[0], reverse=True):
        value = 255 if "ignore" in shape["label"].lower() else 1
        cv2.polylines(mask, np.array([shape["points"]], dtype=np.int32), True, value, 1)
        cv2.fillPoly(mask, np.array([shape["points"]], dtype=np.int32), value)
    return mask


def fill_one(points, height, width) -> np.ndarray:
    tmp = np.zeros((height, width), np.uint8)
    cv2.polylines(tmp, np.array([points], dtype=np.int32), True, 1, 1)
    cv2.fillPoly(tmp, np.array([points], dtype=np.int32), 1)
    return tmp.astype(bool)


def colour_components(rgb: np.ndarray) -> tuple[int, np.ndarray]:
    """Segment saturated (shape) pixels from the pale background; label connected pieces."""
    arr = rgb.astype(np.int16)
    saturated = (arr.max(axis=2) - arr.min(axis=2)) > 60
    return cv2.connectedComponents(saturated.astype(np.uint8), connectivity=4)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def expected_targets(text: str, shapes) -> list[int]:
    """Which shapes the query's words describe, computed from the records without the generator."""
    words = re.findall(r"[a-z]+", text.lower())
    colour = next((w for w in words if w in COLOUR_WORDS), None)
    kind = next((w for w in words if w in SHAPE_WORDS), None)
    idx = range(len(shapes))
    if "not" in words or "non" in words:
        return [i for i in idx if shapes[i].shape == kind and shapes[i].colour != colour]
    if colour and kind:
        return [i for i in idx if shapes[i].shape == kind and shapes[i].colour == colour]
    if colour:
        return [i for i in idx if shapes[i].colour == colour]
    keyed = {
        ("largest", "biggest", "most"): lambda r: r.area,
        ("smallest", "tiniest", "least"): lambda r: -r.area,
        ("leftmost", "left"): lambda r: -r.centroid[0],
        ("rightmost", "right"): lambda r: r.centroid[0],
        ("topmost", "highest", "top"): lambda r: -r.centroid[1],
        ("bottommost", "lowest", "bottom"): lambda r: r.centroid[1],
    }
    for keys, key in keyed.items():
        if any(k in words for k in keys):
            best = max(key(r) for r in shapes)
            return [i for i in idx if key(shapes[i]) == best]
    raise AssertionError(f"test cannot interpret query {text!r}")


def check_query(text: str, target: int, ignore, shapes, size) -> None:
    assert expected_targets(text, shapes) == [target], (text, shapes)
    assert target not in ignore
    words = set(re.findall(r"[a-z]+", text.lower()))
    others = [r for i, r in enumerate(shapes) if i != target and i not in ignore]
    t = shapes[target]
    if words & {"largest", "biggest", "most"}:
        assert all(t.area >= 1.25 * r.area for r in others) and all(t.area > shapes[i].area for i in ignore)
    if words & {"smallest", "tiniest", "least"}:
        assert all(r.area >= 1.25 * t.area for r in others) and all(t.area < shapes[i].area for i in ignore)
    # a visible lead for position queries, never a near tie: half a typical shape side at least
    side = math.sqrt(sum(r.area for r in shapes) / len(shapes))
    for axis, axis_words in ((0, {"left", "leftmost", "right", "rightmost"}),
                             (1, {"top", "topmost", "highest", "bottom", "bottommost", "lowest"})):
        if words & axis_words:
            gaps = [abs(t.centroid[axis] - r.centroid[axis]) for r in shapes if r is not t]
            assert min(gaps) >= 0.5 * side and all(0 < g < size[axis] for g in gaps), text


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = synth.write_dataset(root, n_train=40, n_val=10, seed=7, n_test=3, n_vqa=12, progress=False)
    return root, summary


def test_rendered_pixels_are_exactly_the_polygon_fill():
    rng = np.random.default_rng(0)
    for _ in range(30):
        image, shapes = synth.generate_image(rng)
        arr = np.asarray(image)
        h, w = arr.shape[:2]
        assert 2 <= len(shapes) <= 4
        union = np.zeros((h, w), bool)
        for r in shapes:
            m = fill_one([list(p) for p in r.points], h, w)
            assert not (m & union).any(), "shapes overlap"
            union |= m
            assert m.sum() == r.area
            assert (arr[m] == r.rgb).all()
            ys, xs = np.nonzero(m)
            assert r.centroid == pytest.approx((xs.mean(), ys.mean()))
            assert r.shape in SHAPE_WORDS and r.colour in COLOUR_WORDS
        n, labels = colour_components(arr)
        assert n - 1 == len(shapes)  # the background never looks like a shape


def test_json_polygons_match_the_jpeg_pixels(dataset):
    root, _ = dataset
    checked = 0
    for json_path in sorted((root / "reason_seg/ReasonSeg").glob("*/*.json")):
        rgb = np.asarray(Image.open(json_path.with_suffix(".jpg")).convert("RGB"))
        h, w = rgb.shape[:2]
        n, labels = colour_components(rgb)
        record = json.loads(json_path.read_text())
        for shape in record["shapes"]:
            assert shape["shape_type"] == "polygon" and shape["label"] in ("target", "ignore")
            poly = fill_one(shape["points"], h, w)
            overlap = np.bincount(labels[poly], minlength=n)
            overlap[0] = 0
            component = labels == overlap.argmax()
            assert iou(poly, component) > 0.98, (json_path.name, iou(poly, component))
            checked += 1
        mask = original_mask(json_path, h, w)
        target = fill_one(record["shapes"][0]["points"], h, w)
        assert ((mask == 1) == target).all()
        assert set(np.unique(mask)) <= {0, 1, 255}
    assert checked >= 53


def test_every_query_has_one_right_target():
    rng = np.random.default_rng(1)
    families = set()
    n_ignore = 0
    for _ in range(300):
        image, shapes = synth.generate_image(rng)
        for cand in synth.query_candidates(shapes):
            families.add(cand.family)
            n_ignore += bool(cand.ignore)
            for text in cand.phrases + cand.sentences:
                check_query(text, cand.target, cand.ignore, shapes, image.size)
        for q in synth.make_queries(shapes, rng, per_question=2):
            check_query(q.text, q.target, q.ignore, shapes, image.size)
            assert q.is_sentence == q.text.endswith((".", "?"))
    assert families == set(synth.FAMILIES)
    assert n_ignore > 0, "near-ties should produce ignore polygons"


def test_ambiguous_size_and_position_are_not_asked():
    def rec(area, cx, cy, colour="red", shape="circle"):
        r = math.sqrt(area / math.pi)
        box = (int(cx - r), int(cy - r), int(cx + r), int(cy + r))
        return synth.ShapeRecord(shape, colour, (0, 0, 0), ((0, 0),), box, area, (cx, cy))

    twins = [rec(400, 30, 30), rec(410, 150, 40, colour="blue")]
    fams = {c.family for c in synth.query_candidates(twins)}
    assert "largest" not in fams and "smallest" not in fams
    assert {"leftmost", "rightmost", "colour", "colour_shape"} <= fams
    assert "topmost" not in fams  # 10 px apart vertically: too close to call

    near = [rec(1000, 30, 30), rec(700, 100, 120), rec(200, 150, 60)]
    largest = next(c for c in synth.query_candidates(near) if c.family == "largest")
    assert largest.target == 0 and largest.ignore == (1,)


def test_reason_seg_json_matches_records_and_format(dataset):
    root, summary = dataset
    counts = {"train": 40, "val": 10, "test": 3}
    for split, n in counts.items():
        folder = root / "reason_seg/ReasonSeg" / split
        assert len(list(folder.glob("*.jpg"))) == n and len(list(folder.glob("*.json"))) == n
        for i in range(n):
            _, shapes, record = synth.reason_seg_sample(7, split, i)
            stored = json.loads((folder / f"synth_{split}_{i:06d}.json").read_text(encoding="utf-8"))
            assert stored == record
            assert set(stored) == {"text", "is_sentence", "shapes"}
            assert 1 <= len(stored["text"]) <= 3 and isinstance(stored["is_sentence"], bool)
            labels = [s["label"] for s in stored["shapes"]]
            assert labels[0] == "target" and labels.count("target") == 1
            polys = [[[float(x), float(y)] for x, y in r.points] for r in shapes]
            target = polys.index(stored["shapes"][0]["points"])
            ignored = [s["points"] for s in stored["shapes"][1:]]
            ignore = tuple(k for k, poly in enumerate(polys) if poly in ignored)
            assert len(ignore) == len(labels) - 1
            image = Image.open(folder / f"synth_{split}_{i:06d}.jpg")
            for text in stored["text"]:
                check_query(text, target, ignore, shapes, image.size)
                assert "[SEG]" not in text and "<image>" not in text
    assert sum(summary["families"]["train"].values()) == 40
    assert summary["reason_seg"] == counts


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    def digest(root):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        synth.write_dataset(tmp_path / name, 6, 2, seed, n_vqa=4, progress=False)
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a == b and len(a) == 6 * 2 + 2 * 2 + 4 + 1
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    # one split's size does not change another split's files
    synth.write_dataset(tmp_path / "d", 3, 2, 3, n_vqa=4, progress=False)
    d = digest(tmp_path / "d")
    assert {k: v for k, v in d.items() if "/val/" in k or "coco" in k} == \
           {k: v for k, v in a.items() if "/val/" in k or "coco" in k}


def test_image_sizes_vary_and_are_not_square(dataset):
    root, _ = dataset
    sizes = [Image.open(p).size for p in root.rglob("*.jpg")]
    assert len(sizes) == 40 + 10 + 3 + 12
    assert all(w != h for w, h in sizes)
    assert all(96 <= v <= 320 for s in sizes for v in s)
    assert len(set(sizes)) > len(sizes) // 2
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)


def test_vqa_json_is_llava_format_with_right_answers(dataset):
    root, summary = dataset
    items = json.loads((root / "llava_dataset/synth_vqa.json").read_text(encoding="utf-8"))
    assert summary["vqa_data"] == "synth_vqa" and len(items) == 12
    for i, item in enumerate(items):
        assert set(item) == {"id", "image", "conversations"}
        rgb = np.asarray(Image.open(root / "coco/train2017" / item["image"]).convert("RGB"))
        turns = item["conversations"]
        assert len(turns) >= 2 and len(turns) % 2 == 0
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n")
        assert sum("<image>" in t["value"] for t in turns) == 1
        _, shapes, expected = synth.vqa_sample(7, i)
        assert turns == expected
        n_components = colour_components(rgb)[0] - 1
        for q, a in zip(turns[::2], turns[1::2]):
            question = q["value"].replace("<image>\n", "")
            if question == "How many shapes are there?":
                assert a["value"] == str(len(shapes)) == str(n_components)
            elif m := re.fullmatch(r"What colour is the (\w+)\?", question):
                same = [r for r in shapes if r.shape == m.group(1)]
                assert len(same) == 1 and a["value"] == same[0].colour.capitalize() + "."
            elif m := re.fullmatch(r"How many (\w+)s are there\?", question):
                assert a["value"] == str(sum(r.shape == m.group(1) for r in shapes))
            else:
                raise AssertionError(f"unexpected question {question!r}")


def test_cli_writes_tree_and_counts(tmp_path, capsys):
    out = tmp_path / "ds"
    assert synth.main(["--out", str(out), "--n_train", "5", "--n_val", "2", "--n_test", "1",
                       "--n_vqa", "3", "--seed", "1", "--quiet"]) == 0
    seg = out / "reason_seg/ReasonSeg"
    assert sorted(p.name for p in (seg / "train").iterdir()) == \
        sorted(f"synth_train_{i:06d}{e}" for i in range(5) for e in (".jpg", ".json"))
    assert len(list((seg / "val").glob("*.jpg"))) == 2 and len(list((seg / "test").glob("*.json"))) == 1
    assert len(list((out / "coco/train2017").glob("*.jpg"))) == 3
    assert len(json.loads((out / "llava_dataset/synth_vqa.json").read_text())) == 3
    assert "train 5, val 2, test 1" in capsys.readouterr().out
    # a smaller rerun leaves no stale files behind for the loaders' globs
    synth.main(["--out", str(out), "--n_train", "2", "--n_val", "2", "--n_vqa", "1", "--quiet"])
    assert len(list((seg / "train").glob("*"))) == 4 and not list((seg / "test").glob("*"))
    assert len(list((out / "coco/train2017").glob("*.jpg"))) == 1


def test_bad_arguments_are_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        synth.main(["--out", str(tmp_path), "--n_train", "-1"])
    assert "--n_train must be >= 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n_val"):
        synth.write_dataset(tmp_path, 1, -2, 0)
    with pytest.raises(ValueError, match="split"):
        synth.reason_seg_sample(0, "dev", 0)


def test_fresh_sample_is_new_and_answerable():
    image, queries = synth.sample_fresh_image(123)
    image2, shapes, queries2 = synth.sample_fresh(123)
    assert queries == queries2 and np.array_equal(np.asarray(image), np.asarray(image2))
    assert queries and all(0 <= q.target < len(shapes) for q in queries)
    for q in queries:
        check_query(q.text, q.target, q.ignore, shapes, image.size)
    other, _ = synth.sample_fresh_image(124)
    assert not np.array_equal(np.asarray(image), np.asarray(other)) or image.size != other.size
