"""Masks, names and prompts each reader produces from the fixture formats (lisa.data.*)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from helpers.fixtures import write_fixture_tree
from lisa.data.parts import paco_lvis_source, pascal_part_source
from lisa.data.reason_seg import ReasonSegSource
from lisa.data.refer_seg import ReferSource
from lisa.data.rng import item_rng
from lisa.data.sem_seg import sem_seg_source
from lisa.data.templates import ANSWER_LIST, LONG_QUESTION_LIST, SHORT_QUESTION_LIST
from lisa.data.validation import build_val_dataset
from lisa.data.vqa import VQASource, vqa_json_path


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return write_fixture_tree(root, families=("sem_seg", "refer_seg", "vqa", "reason_seg", "grefcoco"))


def _draws(source, n=40, k=3, record=0):
    return [source.load(record, item_rng(0, 0, 0, i), k) for i in range(n)]


def _by_class(samples):
    out = {}
    for s in samples:
        for name, m in zip(s.sampled_classes, s.masks):
            out.setdefault(name, set()).add(int(m.sum()))
    return out


def test_ade20k_remap_and_pixel_counts(tree):
    src = sem_seg_source(tree["root"], "ade20k")
    assert len(src) == tree["datasets"]["ade20k"]["images"]
    seen = _by_class(_draws(src))
    px = tree["pixels"]
    assert seen == {"wall": {px["ade20k:ADE_train_00000001:wall"]},
                    "sky": {px["ade20k:ADE_train_00000001:sky"]},
                    "flag": {px["ade20k:ADE_train_00000001:flag"]}}
    s = src.load(0, item_rng(0, 0, 0, 0), 3)
    assert s.label.shape == (24, 32)
    assert set(np.unique(s.label)) == {0, 2, 149, 255}  # raw 0 ("other") -> 255, raw k -> k - 1
    assert int((s.label == 255).sum()) == 24 * 32 - 256 - 128 - 32
    second = src.load(1, item_rng(0, 0, 0, 0), 3)  # 30 x 20 image: sizes are (h, w)
    assert second.sampled_classes == ["floor"] and second.masks[0].shape == (30, 20)
    assert int(second.masks[0].sum()) == px["ade20k:ADE_train_00000002:floor"]


def test_cocostuff_ignores_dashed_classes_but_keeps_sky(tree):
    src = sem_seg_source(tree["root"], "cocostuff")
    assert src.pairs[0][0].endswith(os.path.join("coco", "train2017", "000000000009.jpg"))
    seen = _by_class(_draws(src))
    assert seen == {"person": {tree["pixels"]["cocostuff:000000000009:person"]},
                    "sky": {tree["pixels"]["cocostuff:000000000009:sky"]}}


def test_mapillary_reads_palette_indices_and_skips_unlabeled(tree):
    src = sem_seg_source(tree["root"], "mapillary")
    seen = _by_class(_draws(src))
    assert seen == {"road": {tree["pixels"]["mapillary:mapi_0001:road"]},
                    "car": {tree["pixels"]["mapillary:mapi_0001:car"]}}


def test_paco_names_are_readable_and_masks_match(tree):
    src = paco_lvis_source(tree["root"])
    samples = _draws(src, n=60, k=3)
    seen = _by_class(samples)
    px = tree["pixels"]
    expected = {"mug handle": px["paco_lvis:handle"], "the handle of the mug": px["paco_lvis:handle"],
                "car wheel": px["paco_lvis:wheel"], "the wheel of the car": px["paco_lvis:wheel"],
                "trash can lid": px["paco_lvis:lid"], "the lid of the trash can": px["paco_lvis:lid"],
                "mug": px["paco_lvis:mug"]}
    assert set(seen) == set(expected)
    assert all(seen[name] == {n} for name, n in expected.items())
    for s in samples:
        assert len(s.masks) == 3 and len(s.sampled_classes) == 3
        for q in s.questions:
            assert "the the" not in q and "_" not in q and "(" not in q


def test_pascal_part_rle_with_string_counts(tree):
    src = pascal_part_source(tree["root"])
    seen = _by_class(_draws(src))
    px = tree["pixels"]
    assert {n: v for n, v in seen.items()} == {
        "aeroplane body": {px["pascal_part:body"]}, "the body of the aeroplane": {px["pascal_part:body"]},
        "person hand": {px["pascal_part:hand"]}, "the hand of the person": {px["pascal_part:hand"]}}


@pytest.mark.parametrize("ds", ["refcoco", "refcoco+", "refcocog"])
def test_refcoco_family_masks_are_unions(tree, ds):
    src = ReferSource(tree["root"], ds)
    assert len(src) == tree["datasets"][ds]["images"]
    assert sum(len(p) for _, p in src.records) == tree["datasets"][ds]["samples"]
    seen = _by_class(_draws(src, record=0))
    px = tree["pixels"]
    assert seen == {"man on the left": {px["refer:ann11"]}, "person in red shirt": {px["refer:ann11"]},
                    "dog on the right": {px["refer:ann12"]}}
    # refs of other splits are not used for training
    assert all(s not in ("small dog", "person at the bottom")
               for _, pairs in src.records for s, _, _ in pairs)


def test_refclef_rle_and_image_folder(tree):
    src = ReferSource(tree["root"], "refclef")
    paths = {src.record_path(i) for i in range(len(src))}
    root = tree["root"]
    assert os.path.join(root, "refer_seg", "images", "saiapr_tc-12", "25", "images", "25215.jpg") in paths
    seen = {}
    for i in range(len(src)):
        seen.update(_by_class(_draws(src, n=10, record=i)))
    assert seen == {"sky": {tree["pixels"]["refclef:ann501"]},
                    "blue sky above": {tree["pixels"]["refclef:ann501"]},
                    "ground at the bottom": {tree["pixels"]["refclef:ann502"]}}


def test_grefcoco_multi_object_and_no_target(tree):
    src = ReferSource(tree["root"], "grefcoco")
    seen = {}
    for i in range(len(src)):
        seen.update(_by_class(_draws(src, n=3, record=i)))
    assert seen == {"everyone": {tree["pixels"]["grefcoco:ref701"]}, "the cat": {0}}


def test_reason_seg_target_on_top_of_ignore_and_explanations(tree):
    src = ReasonSegSource(tree["root"], "ReasonSeg|train", explanatory=0.1)
    assert len(src) == 2 and src.explanations
    kinds = set()
    for i in range(60):
        s = src.load(0, item_rng(0, 0, 0, i), 3)
        assert set(s.sampled_classes) == {"What keeps the rain off?", "Which part shelters people?"}
        user, reply = s.turns[0][0]
        if not s.masks:  # text-only explanatory answer
            kinds.add("text")
            assert "[SEG]" not in reply and reply.startswith("The roof")
        elif "The roof" in reply:
            kinds.add("seg+explanation")
            assert reply.split(" The roof")[0] in ANSWER_LIST
        else:
            kinds.add("seg")
            assert user in {t.format(sent=s.sampled_classes[0]) for t in LONG_QUESTION_LIST}
            assert reply in ANSWER_LIST
        for m in s.masks:
            assert int(m.sum()) == tree["pixels"]["rs_train_1:target"]
    assert kinds == {"text", "seg+explanation", "seg"}
    # cp1252 file, short template with the lower-cased text; the "flag" shape is skipped
    s = src.load(1, item_rng(0, 0, 0, 0), 3)
    assert s.sampled_classes == ["the caf\u00e9 sign"]
    assert s.turns[0][0][0] in {t.format(class_name="caf\u00e9 sign") if "the {class_name}" in t
                                else t.format(class_name="the caf\u00e9 sign") for t in SHORT_QUESTION_LIST}
    assert int(s.masks[0].sum()) == tree["pixels"]["rs_train_2:target"]


def test_vqa_moves_image_token_to_front_and_converts_gray(tree):
    src = VQASource(vqa_json_path(tree["root"], "llava_instruct_150k"),
                    os.path.join(tree["root"], "coco", "train2017"))
    s0 = src.load(0, item_rng(0, 0, 0, 0), 3)
    assert s0.turns == [[("<image>\nWhat is in the picture?", "Random noise in many colours."),
                         ("Is it bright?", "Moderately.")]]
    assert s0.masks == []
    s1 = src.load(1, item_rng(0, 0, 0, 0), 3)
    assert s1.image.shape == (24, 32, 3)  # grayscale JPEG -> RGB
    assert src.records[0]["conversations"][0]["value"].endswith("<image>")  # JSON not mutated


def test_reason_seg_validation_keeps_ignore_in_label(tree):
    val = build_val_dataset(tree["root"], "ReasonSeg|val", sam_size=32, clip_size=32)
    assert len(val) == tree["val_sets"]["ReasonSeg|val"]["images"]
    item = val[0]
    assert item["inference"] is True
    assert item["conversations"][0].endswith(
        "USER: <image>\n Where would you sit? Please output segmentation mask. ASSISTANT: [SEG].</s>")
    assert int(item["masks"].sum()) == tree["pixels"]["rs_val_1:target"]
    assert int((item["label"] == 255).sum()) == tree["pixels"]["rs_val_1:ignore"]
    assert int((item["label"] == 1).sum()) == tree["pixels"]["rs_val_1:target"]
    short = val[1]["conversations"][0]
    assert "USER: <image>\n What is lamp in this image? Please output segmentation mask." in short
    assert len(build_val_dataset(tree["root"], "ReasonSeg|test", sam_size=32, clip_size=32)) == 1


def test_refer_validation_at_both_roots(tree, tmp_path):
    val = build_val_dataset(tree["root"], "refcoco|unc|val", sam_size=32, clip_size=32)
    assert len(val) == 1
    item = val[0]
    assert [int(m.sum()) for m in item["masks"]] == [tree["pixels"]["refer:ann31"]] * 2
    assert item["sampled_classes"] == ["small dog", "tiny dog top left"]
    assert int((item["label"] == 255).sum()) == 0  # nothing ignored
    assert item["masks"].shape[1:] == (24, 32)  # original resolution
    # the original validation layout (refer data directly under --dataset_dir) still works
    legacy = tmp_path / "refer_only"
    os.symlink(os.path.join(tree["root"], "refer_seg"), legacy)
    assert len(build_val_dataset(str(legacy), "refcoco|unc|testA", sam_size=32, clip_size=32)) == 1
