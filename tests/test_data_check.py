"""`lisa data check` on a complete and on a broken fixture tree, and `--show`."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from PIL import Image

from helpers.fixtures import write_fixture_tree
from lisa.cli import main as lisa_main


@pytest.fixture(scope="module")
def complete(tmp_path_factory):
    root = tmp_path_factory.mktemp("complete")
    return write_fixture_tree(root)


def _rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(sem_seg|refer_seg|vqa|reason_seg|validation)\s+(\S+)\s+(.+?)\s+(\d+)\s+(\d+)\s+(\d+)$",
                     line)
        if m:
            rows[m.group(2)] = [m.group(3), int(m.group(4)), int(m.group(5)), int(m.group(6))]
    return rows


def _check(capsys, *args):
    rc = lisa_main(["data", "check", "--quiet", *args])
    return rc, capsys.readouterr().out


def test_check_on_a_complete_tree(complete, capsys):
    rc, out = _check(capsys, "--dataset_dir", complete["root"])
    assert rc == 0
    rows = _rows(out)
    for name, expect in complete["datasets"].items():
        assert rows[name] == ["ok", expect["images"], expect["samples"], 0], name
    assert rows["ReasonSeg|val"] == ["ok", 2, 2, 0]
    assert rows["explanatory"][0] == "ok"
    assert "all requested datasets usable" in out


def test_check_only_walks_the_requested_datasets(complete, capsys):
    rc, out = _check(capsys, "--dataset_dir", complete["root"], "--dataset", "refer_seg||vqa",
                     "--sample_rates", "1,1", "--refer_seg_data", "refcocog",
                     "--val_dataset", "refcoco|unc|val")
    assert rc == 0
    assert set(_rows(out)) == {"refcocog", "llava_instruct_150k", "refcoco|unc|val"}


def test_check_on_a_broken_tree(complete, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(complete["root"], root)
    shutil.rmtree(root / "mapillary")
    missing_img = root / "refer_seg/images/mscoco/images/train2014/COCO_train2014_000000000002.jpg"
    os.remove(missing_img)
    bad_json = root / "reason_seg/ReasonSeg/train/rs_train_1.json"
    bad_json.write_text("{not json")
    (root / "coco/train2017/000000000034.jpg").write_bytes(b"\x00" * 10)
    rc, out = _check(capsys, "--dataset_dir", str(root))
    assert rc == 1
    rows = _rows(out)
    assert rows["mapillary"][0] == "missing"
    assert f"expected the file {root / 'mapillary' / 'config_v2.0.json'}" in out
    for ds in ("refcoco", "refcoco+", "refcocog"):
        assert rows[ds] == ["ok, with problems", 2, 3, 1]
    assert f"missing_file: 1 (e.g. {missing_img})" in out
    assert rows["ReasonSeg|train"] == ["ok, with problems", 2, 1, 1]
    assert f"bad_json: 1 (e.g. {bad_json})" in out
    assert rows["llava_instruct_150k"][0] == "ok, with problems"
    assert "unusable: mapillary" in out


def test_check_reports_a_missing_dataset_dir_layout(tmp_path, capsys):
    rc, out = _check(capsys, "--dataset_dir", str(tmp_path), "--dataset", "reason_seg",
                     "--sample_rates", "1")
    assert rc == 1
    assert _rows(out)["ReasonSeg|train"][0] == "missing"
    assert str(tmp_path / "reason_seg" / "ReasonSeg" / "train") in out
    assert _rows(out)["explanatory"][0] == "missing (optional)"


def test_check_show_writes_rendered_samples(complete, tmp_path, capsys):
    show = tmp_path / "show"
    rc, out = _check(capsys, "--dataset_dir", complete["root"], "--show", "3", "--show_dir", str(show),
                     "--no_eval")
    assert rc == 0
    files = sorted(os.listdir(show))
    assert files == ["sample_000.png", "sample_001.png", "sample_002.png"]
    for f in files:
        im = Image.open(show / f)
        assert im.width >= 384 and im.height > im.width * 24 // 32  # image plus text block
    assert out.count(" <- ") == 3
