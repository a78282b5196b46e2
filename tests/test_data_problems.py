"""Bad inputs: skipped and counted by default, an error naming the file with strict mode; the
restricted refs unpickler; convert-refs."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.fixtures import write_fixture_tree
from lisa.data.cli import main as data_main
from lisa.data.parts import CocoPartSource
from lisa.data.problems import DataError, ProblemCounter
from lisa.data.reason_seg import ReasonSegDataset
from lisa.data.refer import ReferIndex
from lisa.data.refer_seg import ReferSegDataset
from lisa.data.safe_pickle import UnsafePickleError, safe_load_pickle
from lisa.data.sem_seg import SemSegDataset

SMALL = {"clip_size": 28, "sam_size": 32}


def _rs_json(root, name, split="train"):
    return os.path.join(root, "reason_seg", "ReasonSeg", split, name + ".json")


def _draw(ds, n=30):
    return [ds[i]["image_path"] for i in range(n)]


@pytest.fixture
def sem(tmp_path):
    write_fixture_tree(tmp_path, families=("sem_seg",))
    return str(tmp_path)


@pytest.fixture
def rs(tmp_path):
    write_fixture_tree(tmp_path, families=("reason_seg",))
    return str(tmp_path)


def test_missing_image_is_skipped_and_counted(sem):
    missing = os.path.join(sem, "ade20k", "images", "training", "ADE_train_00000001.jpg")
    os.remove(missing)
    ds = SemSegDataset(sem, "ade20k", **SMALL)
    paths = _draw(ds)
    assert all(p.endswith("ADE_train_00000002.jpg") for p in paths)
    assert ds.stats()["missing_file"] > 0
    assert ds.counter.examples("missing_file") == [missing]


def test_unreadable_image_and_wrong_label_mode(sem):
    bad = os.path.join(sem, "coco", "train2017", "000000000009.jpg")
    with open(bad, "wb") as f:
        f.write(b"not a jpeg")
    label = os.path.join(sem, "mapillary", "training", "v2.0", "labels", "mapi_0001.png")
    Image.open(label).convert("RGB").save(label)  # colours instead of palette indices
    ds = SemSegDataset(sem, "cocostuff||mapillary||ade20k", **SMALL)
    paths = _draw(ds)
    assert not any("000000000009" in p or "mapi_0001" in p for p in paths)
    assert ds.stats()["unreadable"] > 0
    assert set(ds.counter.examples("unreadable", 5)) == {bad, label}


def test_class_out_of_range_and_size_mismatch(sem):
    label = os.path.join(sem, "ade20k", "annotations", "training", "ADE_train_00000001.png")
    arr = np.array(Image.open(label))
    arr[0, 0] = 200  # ADE20K has 150 classes
    Image.fromarray(arr).save(label)
    other = os.path.join(sem, "ade20k", "annotations", "training", "ADE_train_00000002.png")
    Image.fromarray(np.ones((10, 10), np.uint8)).save(other)
    ds = SemSegDataset(sem, "ade20k||cocostuff", **SMALL)
    assert not any("ADE_train" in p for p in _draw(ds))
    assert ds.stats()["bad_class"] > 0 and ds.stats()["size_mismatch"] > 0
    strict = SemSegDataset(sem, "ade20k", strict=True, **SMALL)
    with pytest.raises(DataError, match=r"ADE_train_0000000[12]\.png: .*(200|size)"):
        strict[0]


def test_coco_polygon_and_category_problems(sem):
    path = os.path.join(sem, "vlpart", "paco", "annotations", "paco_lvis_v1_train.json")
    data = json.load(open(path))
    data["annotations"][0]["segmentation"] = [[1, 2, 3]]  # odd number of coordinates
    data["annotations"][1]["category_id"] = 99
    json.dump(data, open(path, "w"))
    src = CocoPartSource("paco_lvis", path, os.path.join(sem, "coco"))
    ds = SemSegDataset(sem, "paco_lvis", num_classes_per_sample=1, **SMALL)
    for i in range(40):
        item = ds[i]
        assert item["masks"].shape[0] == 1 and item["masks"].sum() > 0
    stats = ds.stats()
    assert stats["bad_polygon"] > 0 and stats["bad_class"] > 0
    with pytest.raises(Exception, match="even number"):
        src.inspect(0, deep=True)


def test_reason_seg_bad_json_polygon_and_no_target(rs):
    with open(_rs_json(rs, "rs_train_1"), "w") as f:
        f.write('{"text": ["x"], "shapes": [')
    data = json.load(open(_rs_json(rs, "rs_train_2"), encoding="cp1252"))
    data["shapes"][0]["points"] = [[1, 1], [5, 5]]  # a "polygon" of two points
    json.dump(data, open(_rs_json(rs, "rs_train_2"), "w"))
    ds = ReasonSegDataset(rs, "ReasonSeg|train", **SMALL)
    with pytest.raises(DataError, match="no usable sample in 100 draws"):
        ds[0]
    stats = ds.stats()
    assert stats["bad_json"] > 0 and stats["bad_polygon"] > 0
    # an image whose only shapes are "ignore" never produces an empty target mask
    data["shapes"] = [{"label": "ignore", "points": [[0, 0], [9, 0], [9, 9], [0, 9]]}]
    json.dump(data, open(_rs_json(rs, "rs_train_2"), "w"))
    strict = ReasonSegDataset(rs, "ReasonSeg|train", strict=True, **SMALL)
    with pytest.raises(DataError, match=r"rs_train_[12]\.json"):
        strict[0]
    ds = ReasonSegDataset(rs, "ReasonSeg|train", **SMALL)
    with pytest.raises(DataError):
        ds[0]
    assert ds.stats()["no_target"] > 0


def test_missing_dataset_names_the_expected_folder(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "ade20k" / "images" / "training")):
        SemSegDataset(str(tmp_path), "ade20k")
    with pytest.raises(DataError, match=str(tmp_path / "refer_seg" / "refcoco")):
        ReferSegDataset(str(tmp_path), "refcoco")


def test_problem_counts_from_workers_reach_the_main_process(sem):
    os.remove(os.path.join(sem, "ade20k", "images", "training", "ADE_train_00000001.jpg"))
    ds = SemSegDataset(sem, "ade20k", samples_per_epoch=16, **SMALL)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, collate_fn=lambda x: x)
    assert len(list(loader)) == 16
    assert ds.stats()["missing_file"] > 0
    assert ds.counter.examples("missing_file")[0].endswith("ADE_train_00000001.jpg")
    assert "missing_file=" in ds.counter.report()


def test_counter_strict_mode_raises_on_first_problem():
    counter = ProblemCounter(strict=True)
    with pytest.raises(DataError, match="some/file.png: broken"):
        counter.count("unreadable", "some/file.png", "broken")


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_restricted_unpickler_refuses_code_and_reads_plain_data(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "refs(unc).p"
    evil.write_bytes(pickle.dumps([{"ref_id": 1}, _Boom(str(marker))], protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p: refusing to load.*io\.open|builtins\.open"):
        safe_load_pickle(evil)
    assert not marker.exists()
    # a Python 2 pickle: SHORT_BINSTRING values, one of them not UTF-8 (Latin-1 fallback)
    py2 = tmp_path / "py2.p"
    py2.write_bytes(b"\x80\x02]q\x00}q\x01(U\x04sentq\x02U\x06caf\xc3\xa9!q\x03ua.")
    assert safe_load_pickle(py2) == [{"sent": "caf\u00e9!"}]
    py2.write_bytes(b"\x80\x02]q\x00}q\x01(U\x04sentq\x02U\x04caf\xe9q\x03ua.")
    assert safe_load_pickle(py2) == [{"sent": "caf\u00e9"}]
    plain = tmp_path / "plain.p"
    plain.write_bytes(pickle.dumps([{"a": (1, 2.5), "b": {3}, "c": b"x", "d": None}], protocol=2))
    assert safe_load_pickle(plain) == [{"a": (1, 2.5), "b": {3}, "c": b"x", "d": None}]


def test_malicious_refs_stop_the_referring_dataset(tmp_path):
    write_fixture_tree(tmp_path, families=("refer_seg",))
    target = tmp_path / "refer_seg" / "refcoco" / "refs(unc).p"
    target.write_bytes(pickle.dumps([_Boom(str(tmp_path / "pwned"))], protocol=2))
    with pytest.raises(UnsafePickleError, match="refcoco"):
        ReferIndex(str(tmp_path / "refer_seg"), "refcoco")
    assert not (tmp_path / "pwned").exists()


def test_convert_refs_writes_json_that_readers_prefer(tmp_path, capsys):
    write_fixture_tree(tmp_path, families=("refer_seg",))
    assert data_main(["convert-refs", "--dataset_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    js = tmp_path / "refer_seg" / "refcocog" / "refs(umd).json"
    assert str(js) in out and js.exists()
    refs = json.loads(js.read_text())
    assert refs[0]["sentences"][0]["sent"] == "man on the left"
    refs[0]["sentences"][0]["sent"] = "edited in the json"
    js.write_text(json.dumps(refs))
    index = ReferIndex(str(tmp_path / "refer_seg"), "refcocog")
    assert index.refs[1]["sentences"][0]["sent"] == "edited in the json"
    bad = tmp_path / "refer_seg" / "refclef" / "refs(unc).p"
    bad.write_bytes(pickle.dumps([_Boom(str(tmp_path / "pwned"))], protocol=2))
    assert data_main(["convert-refs", str(bad)]) == 0  # the JSON exists already: kept
    assert "exists, kept" in capsys.readouterr().out
    assert data_main(["convert-refs", "--overwrite", str(bad)]) == 1
    assert "refusing to load" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()
