"""Tiny but faithful instances of every training/validation format, for the tests and
bench/data.py: ``write_fixture_tree(root)`` writes a ``--dataset_dir`` tree and returns what it wrote.

Formats written: ADE20K label PNGs (raw 0 = other), COCO-Stuff PNGs (value = id - 1, 255), a
Mapillary ``config_v2.0.json`` with palette (mode P) label PNGs, PACO-LVIS JSON (polygons, file
names with ``train2017/``, no ``iscrowd``), PASCAL-Part JSON (compressed RLE with string counts,
annotation ids from 0, ``abbr``), REFER ``refs(*).p`` pickles + ``instances.json`` (refclef with RLE,
the others with polygons, one object made of two overlapping polygons), a gRefCOCO ``grefs(unc).json``
(``families`` must name "grefcoco"), LLaVA JSON (``<image>`` at the start and at the end, a grayscale
image), ReasonSeg train/val/test JSON with target / ignore / flag shapes (one file in cp1252), and the
explanatory JSON.

Every shape is an axis-aligned rectangle, so the expected pixel counts in the returned
``"pixels"`` dict follow from the geometry: an OpenCV-filled LabelMe rectangle from (x0, y0) to
(x1, y1) covers (x1 - x0 + 1) * (y1 - y0 + 1) pixels, a COCO polygon rectangle (x1 - x0) * (y1 - y0).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from lisa.data.classes import COCOSTUFF_CLASSES

ALL_FAMILIES = ("sem_seg", "refer_seg", "vqa", "reason_seg")
H, W = 24, 32  # most fixture images; a few are 30 x 20 to catch transposed sizes


def _jpeg(path: Path, h: int = H, w: int = W, seed: int = 0, gray: bool = False) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a soft two-colour gradient with a little noise: mask overlays stay visible on it
    a, b = rng.integers(60, 200, size=(2, 3))
    t = (np.linspace(0, 1, w)[None, :, None] + np.linspace(0, 1, h)[:, None, None]) / 2
    arr = a * (1 - t) + b * t + rng.normal(0, 8, size=(h, w, 3))
    arr = arr.clip(0, 255).astype(np.uint8)
    Image.fromarray(arr[..., 0] if gray else arr).save(path, quality=90)


def _png(path: Path, arr: np.ndarray, palette: list[int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))  # mode L
    if palette is not None:
        im.putpalette(palette + [0] * (768 - len(palette)))  # L -> P, indices unchanged
    im.save(path)


def _json(path: Path, data, encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(data, ensure_ascii=False).encode(encoding))


def _rect_poly(x0, y0, x1, y1) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _rle(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> dict:
    m = np.zeros((h, w), dtype=np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    rle = coco_mask.encode(np.asfortranarray(m))
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def _sem_seg(root: Path, out: dict) -> None:
    # ADE20K: raw 1 = wall (class 0), raw 3 = sky (class 2), raw 150 = flag (class 149), 0 = other.
    ade = np.zeros((H, W), np.uint8)
    ade[0:8, :] = 1
    ade[8:16, 0:16] = 3
    ade[16:24, 0:4] = 150
    ade2 = np.zeros((30, 20), np.uint8)
    ade2[:, 0:5] = 4  # floor, 150 px
    for i, (lab, shape) in enumerate(((ade, (H, W)), (ade2, (30, 20))), start=1):
        _jpeg(root / f"ade20k/images/training/ADE_train_{i:08d}.jpg", *shape, seed=i)
        _png(root / f"ade20k/annotations/training/ADE_train_{i:08d}.png", lab)
    out["datasets"]["ade20k"] = {"images": 2, "samples": 2}
    out["pixels"].update({"ade20k:ADE_train_00000001:wall": 256, "ade20k:ADE_train_00000001:sky": 128,
                          "ade20k:ADE_train_00000001:flag": 32, "ade20k:ADE_train_00000002:floor": 150})

    # COCO-Stuff: value = id - 1; "building-other" is ignored, 255 = unlabeled.
    cs = np.full((H, W), 255, np.uint8)
    cs[0:10, 0:10] = 0  # person, 100 px
    cs[10:24, :] = COCOSTUFF_CLASSES.index("sky")  # 448 px
    cs[0:10, 20:32] = COCOSTUFF_CLASSES.index("building-other")
    _jpeg(root / "coco/train2017/000000000009.jpg", seed=11)
    _png(root / "cocostuff/train2017/000000000009.png", cs)
    out["datasets"]["cocostuff"] = {"images": 1, "samples": 1}
    out["pixels"].update({"cocostuff:000000000009:person": 100, "cocostuff:000000000009:sky": 448})

    # Mapillary v2.0: palette PNG, pixel = index into config labels.
    labels = [("construction--flat--road", "Road", [128, 64, 128]),
              ("nature--sky", "Sky", [70, 130, 180]),
              ("object--vehicle--car", "Car", [0, 0, 142]),
              ("void--unlabeled", "Unlabeled", [0, 0, 0])]
    _json(root / "mapillary/config_v2.0.json", {"labels": [
        {"name": n, "readable": r, "color": c, "instances": False, "evaluate": True}
        for n, r, c in labels], "version": "2.0", "mapping": "public"})
    mp = np.full((H, W), 3, np.uint8)  # unlabeled
    mp[12:24, :] = 0  # road, 384 px
    mp[0:6, 0:8] = 2  # car, 48 px
    palette = [v for _, _, c in labels for v in c]
    _jpeg(root / "mapillary/training/images/mapi_0001.jpg", seed=21)
    _png(root / "mapillary/training/v2.0/labels/mapi_0001.png", mp, palette)
    out["datasets"]["mapillary"] = {"images": 1, "samples": 1}
    out["pixels"].update({"mapillary:mapi_0001:road": 384, "mapillary:mapi_0001:car": 48})

    # PACO-LVIS: COCO JSON, file_name includes train2017/, no iscrowd, polygons.
    _jpeg(root / "coco/train2017/000000000025.jpg", seed=25)
    paco = {
        "images": [{"id": 25, "file_name": "train2017/000000000025.jpg", "height": H, "width": W},
                   {"id": 26, "file_name": "train2017/000000000026.jpg", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "mug:handle"}, {"id": 2, "name": "car_(automobile):wheel"},
                       {"id": 3, "name": "trash_can:lid"}, {"id": 4, "name": "mug"}],
        "annotations": [
            {"id": 1, "image_id": 25, "category_id": 1, "segmentation": [_rect_poly(0, 0, 4, 4)]},
            {"id": 2, "image_id": 25, "category_id": 2, "segmentation": [_rect_poly(10, 10, 16, 14)]},
            {"id": 3, "image_id": 25, "category_id": 3, "segmentation": [_rect_poly(20, 0, 30, 5)]},
            {"id": 4, "image_id": 25, "category_id": 4, "segmentation": [_rect_poly(0, 16, 8, 24)]},
        ]}
    _json(root / "vlpart/paco/annotations/paco_lvis_v1_train.json", paco)
    out["datasets"]["paco_lvis"] = {"images": 1, "samples": 4}
    out["pixels"].update({"paco_lvis:handle": 16, "paco_lvis:wheel": 24, "paco_lvis:lid": 50,
                          "paco_lvis:mug": 64})

    # PASCAL-Part: compressed RLE with string counts, annotation ids from 0, abbr present.
    img = "2008_000001.jpg"
    _jpeg(root / "vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages" / img, 30, 20, seed=31)
    pascal = {
        "images": [{"id": 1, "file_name": img, "height": 30, "width": 20}],
        "categories": [{"id": 1, "name": "aeroplane:body", "abbr": "aero:body"},
                       {"id": 2, "name": "person:hand", "abbr": "person:hand"}],
        "annotations": [
            {"id": 0, "image_id": 1, "category_id": 1, "segmentation": _rle(30, 20, 0, 0, 10, 10),
             "iscrowd": 0, "area": 100},
            {"id": 1, "image_id": 1, "category_id": 2, "segmentation": _rle(30, 20, 5, 20, 9, 27),
             "iscrowd": 0, "area": 28},
        ]}
    _json(root / "vlpart/pascal_part/train.json", pascal)
    out["datasets"]["pascal_part"] = {"images": 1, "samples": 2}
    out["pixels"].update({"pascal_part:body": 100, "pascal_part:hand": 28})


def _ref(ref_id, ann_id, image_id, split, sents, cat=1):
    return {"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "category_id": cat,
            "split": split, "sent_ids": [ref_id * 10 + k for k in range(len(sents))],
            "sentences": [{"sent_id": ref_id * 10 + k, "sent": s, "raw": s.capitalize() + ".",
                           "tokens": s.split()} for k, s in enumerate(sents)]}


def _refer(root: Path, out: dict, grefcoco: bool) -> None:
    base = root / "refer_seg"
    coco_dir = base / "images/mscoco/images/train2014"
    names = {i: f"COCO_train2014_{i:012d}.jpg" for i in (1, 2, 3)}
    for i, n in names.items():
        _jpeg(coco_dir / n, seed=100 + i)
    images = [{"id": i, "file_name": n, "height": H, "width": W} for i, n in names.items()]
    anns = [
        # two overlapping polygons: union 8*8 + 8*8 - 4*4 = 112 px (the original's sum gives 128)
        {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0,
         "segmentation": [_rect_poly(0, 0, 8, 8), _rect_poly(4, 4, 12, 12)]},
        {"id": 12, "image_id": 1, "category_id": 2, "iscrowd": 0,
         "segmentation": [_rect_poly(16, 0, 32, 10)]},  # 160 px
        {"id": 21, "image_id": 2, "category_id": 1, "iscrowd": 0,
         "segmentation": [_rect_poly(0, 12, 10, 24)]},  # 120 px
        {"id": 31, "image_id": 3, "category_id": 2, "iscrowd": 0,
         "segmentation": [_rect_poly(2, 2, 6, 6)]},  # 16 px
    ]
    instances = {"images": images, "annotations": anns,
                 "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]}
    refs = [_ref(1, 11, 1, "train", ["man on the left", "person in red shirt"]),
            _ref(2, 12, 1, "train", ["dog on the right"], cat=2),
            _ref(3, 21, 2, "train", ["left person"]),
            _ref(4, 31, 3, "val", ["small dog", "tiny dog top left"], cat=2)]
    for ds, split_by, extra in (("refcoco", "unc", "testA"), ("refcoco+", "unc", "testB"),
                                ("refcocog", "umd", "test")):
        ds_refs = refs + [_ref(5, 21, 2, extra, ["person at the bottom"])]
        (base / ds).mkdir(parents=True, exist_ok=True)
        (base / ds / f"refs({split_by}).p").write_bytes(pickle.dumps(ds_refs, protocol=2))
        _json(base / ds / "instances.json", instances)
        out["datasets"][ds] = {"images": 2, "samples": 4}
    out["val_sets"]["refcoco|unc|val"] = {"images": 1, "samples": 2}
    out["pixels"].update({"refer:ann11": 112, "refer:ann12": 160, "refer:ann21": 120, "refer:ann31": 16})

    # refCLEF: saiapr_tc-12/DD/images/ID.jpg, segmentations are lists of RLE dicts (string counts).
    clef_images = [{"id": 25215, "file_name": "25/images/25215.jpg", "height": 30, "width": 20},
                   {"id": 3001, "file_name": "03/images/3001.jpg", "height": H, "width": W}]
    for k, img in enumerate(clef_images):
        _jpeg(base / "images/saiapr_tc-12" / img["file_name"], img["height"], img["width"], seed=200 + k)
    clef = {"images": clef_images, "categories": [{"id": 1, "name": "sky"}], "annotations": [
        {"id": 501, "image_id": 25215, "category_id": 1, "segmentation": [_rle(30, 20, 0, 0, 20, 6)]},
        {"id": 502, "image_id": 3001, "category_id": 1, "segmentation": [_rle(H, W, 0, 20, 32, 24)]}]}
    clef_refs = [_ref(601, 501, 25215, "train", ["sky", "blue sky above"]),
                 _ref(602, 502, 3001, "train", ["ground at the bottom"])]
    (base / "refclef").mkdir(parents=True, exist_ok=True)
    (base / "refclef/refs(unc).p").write_bytes(pickle.dumps(clef_refs, protocol=2))
    _json(base / "refclef/instances.json", clef)
    out["datasets"]["refclef"] = {"images": 2, "samples": 3}
    out["pixels"].update({"refclef:ann501": 120, "refclef:ann502": 128})

    if grefcoco:
        grefs = [dict(_ref(701, [11, 12], 1, "train", ["everyone"]), no_target=False),
                 dict(_ref(702, [-1], 2, "train", ["the cat"]), no_target=True)]
        _json(base / "grefcoco/grefs(unc).json", grefs)
        _json(base / "grefcoco/instances.json", instances)
        out["datasets"]["grefcoco"] = {"images": 2, "samples": 2}
        out["pixels"]["grefcoco:ref701"] = 112 + 160


def _vqa(root: Path, out: dict) -> None:
    _jpeg(root / "coco/train2017/000000000030.jpg", seed=30)
    _jpeg(root / "coco/train2017/000000000034.jpg", seed=34, gray=True)
    records = [
        {"id": "000000000030", "image": "000000000030.jpg", "conversations": [
            {"from": "human", "value": "What is in the picture?\n<image>"},
            {"from": "gpt", "value": "Random noise in many colours."},
            {"from": "human", "value": "Is it bright?"},
            {"from": "gpt", "value": "Moderately."}]},
        {"id": "000000000034", "image": "000000000034.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image."},
            {"from": "gpt", "value": "A grayscale texture."}]},
    ]
    _json(root / "llava_dataset/llava_instruct_150k.json", records)
    out["datasets"]["llava_instruct_150k"] = {"images": 2, "samples": 2}


def _shape(label, x0, y0, x1, y1):
    return {"label": label, "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "group_id": None,
            "shape_type": "polygon", "flags": {}}


def _reason_seg(root: Path, out: dict) -> None:
    rs = root / "reason_seg/ReasonSeg"
    # target listed before a larger ignore box: drawn largest first, so the target stays on top.
    train = {
        "rs_train_1": ({"text": ["What keeps the rain off?", "Which part shelters people?"],
                        "is_sentence": True,
                        "shapes": [_shape("target", 2.9, 3.7, 11, 9), _shape("ignore", 0, 0, 20, 15)]},
                       "utf-8"),
        "rs_train_2": ({"text": ["the caf\u00e9 sign"], "is_sentence": False,
                        "shapes": [_shape("target", 4, 4, 13, 13), _shape("flag", 0, 0, 31, 23)]},
                       "cp1252"),
    }
    for split, items in (("train", train),):
        for k, (name, (data, enc)) in enumerate(items.items()):
            _jpeg(rs / split / f"{name}.jpg", seed=300 + k)
            _json(rs / split / f"{name}.json", dict(data, image_name=f"{name}.jpg"), encoding=enc)
    out["datasets"]["ReasonSeg|train"] = {"images": 2, "samples": 3}
    # target (2..11 x 3..9) = 10 * 7; ignore (0..20 x 0..15) = 21 * 16 minus the target on top
    out["pixels"].update({"rs_train_1:target": 70, "rs_train_1:ignore": 21 * 16 - 70,
                          "rs_train_2:target": 100})
    val = {"rs_val_1": {"text": ["Where would you sit?", "unused second phrasing"],
                        "is_sentence": True,
                        "shapes": [_shape("target", 1, 1, 6, 6), _shape("ignore", 10, 10, 14, 12)]},
           "rs_val_2": {"text": ["lamp"], "is_sentence": False,
                        "shapes": [_shape("target", 0, 20, 31, 23)]}}
    for k, (name, data) in enumerate(val.items()):
        _jpeg(rs / "val" / f"{name}.jpg", seed=400 + k)
        _json(rs / "val" / f"{name}.json", data)
    _jpeg(rs / "test/rs_test_1.jpg", seed=500)
    _json(rs / "test/rs_test_1.json", {"text": ["the door"], "is_sentence": False,
                                       "shapes": [_shape("target", 3, 3, 8, 8)]})
    out["val_sets"]["ReasonSeg|val"] = {"images": 2, "samples": 2}
    out["val_sets"]["ReasonSeg|test"] = {"images": 1, "samples": 1}
    out["pixels"].update({"rs_val_1:target": 36, "rs_val_1:ignore": 15, "rs_val_2:target": 128})
    _json(rs / "explanatory/train.json", [
        {"image": "rs_train_1.jpg", "query": "What keeps the rain off?",
         "outputs": "The roof keeps the rain off because it covers the house."}])
    out["explanations"] = 1


def write_fixture_tree(root, families=ALL_FAMILIES) -> dict:
    """Write the fixture ``--dataset_dir`` under ``root`` and return what was written:
    ``{"root", "datasets": {name: {"images", "samples"}}, "val_sets": {...}, "pixels": {...}}``.
    ``families`` is any of "sem_seg", "refer_seg", "vqa", "reason_seg" and the extra "grefcoco"."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    unknown = set(families) - set(ALL_FAMILIES) - {"grefcoco"}
    if unknown:
        raise ValueError(f"unknown fixture families {sorted(unknown)}")
    out: dict = {"root": os.fspath(root), "datasets": {}, "val_sets": {}, "pixels": {}}
    if "sem_seg" in families:
        _sem_seg(root, out)
    if "refer_seg" in families or "grefcoco" in families:
        _refer(root, out, grefcoco="grefcoco" in families)
    if "vqa" in families:
        _vqa(root, out)
    if "reason_seg" in families:
        _reason_seg(root, out)
    return out
