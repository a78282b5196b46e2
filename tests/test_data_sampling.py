"""Class sampling, templates, hybrid rates and seeding per (seed, rank, worker, epoch)."""

from __future__ import annotations

import os
import random
from collections import Counter

import numpy as np
import pytest
import torch

from helpers.fixtures import write_fixture_tree
from lisa.data import build_train_dataset, worker_init_fn
from lisa.data.hybrid import parse_rates
from lisa.data.problems import DataError
from lisa.data.rng import item_rng
from lisa.data.sem_seg import SemSegDataset
from lisa.data.templates import ANSWER_LIST, SHORT_QUESTION_LIST, short_question

SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
          "helpful, detailed, and polite answers to the human's questions.")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fixture_tree(root)
    return str(root)


def _train(root, **kw):
    args = {"dataset_dir": root, **kw}
    return build_train_dataset(args, clip_size=28, sam_size=32, samples_per_epoch=kw.pop("n", 64))


def test_class_sampling_without_replacement(root):
    ds = SemSegDataset(root, "ade20k", num_classes_per_sample=2, clip_size=28, sam_size=32)
    combos = Counter()
    for i in range(120):
        item = ds[i]
        if item["image_path"].endswith("ADE_train_00000002.jpg"):
            assert item["sampled_classes"] == ["floor"]  # fewer classes than asked: all of them
            continue
        names = item["sampled_classes"]
        assert len(names) == 2 and len(set(names)) == 2
        combos[frozenset(names)] += 1
        assert item["masks"].shape == (2, 24, 32)
        for name, mask, conv in zip(names, item["masks"], item["conversations"]):
            assert f" {name} " in conv  # each conversation asks about its own class, in order
            label_index = {"wall": 0, "sky": 2, "flag": 149}[name]
            assert torch.equal(mask.bool(), item["label"] == label_index)
    assert set(combos) == {frozenset(p) for p in (("wall", "sky"), ("wall", "flag"), ("sky", "flag"))}


def test_templates_and_answers_are_all_used(root):
    ds = SemSegDataset(root, "mapillary", clip_size=28, sam_size=32)
    questions, answers = Counter(), Counter()
    for i in range(150):
        item = ds[i]
        for conv, name in zip(item["conversations"], item["sampled_classes"]):
            assert conv.startswith(SYSTEM + " USER: <image>\n")
            user, reply = conv[len(SYSTEM + " USER: "):].split(" ASSISTANT: ")
            assert reply.endswith("</s>")
            matches = [t for t in SHORT_QUESTION_LIST if t.format(class_name=name) == user]
            assert len(matches) == 1
            questions[matches[0]] += 1
            answers[reply[: -len("</s>")]] += 1
    assert set(questions) == set(SHORT_QUESTION_LIST)
    assert set(answers) == set(ANSWER_LIST)


def test_short_question_never_doubles_the_article():
    rng = np.random.default_rng(0)
    outs = {short_question(rng, "the lid of the trash can") for _ in range(200)}
    assert len(outs) == 4
    assert not any("the the" in q for q in outs)
    assert "<image>\nWhat is the lid of the trash can in this image? Please output segmentation mask." in outs


def test_hybrid_rates_match_empirical_frequencies(root):
    ds = _train(root, sample_rates="9,3,3,1")
    assert ds.names == ["sem_seg", "refer_seg", "vqa", "reason_seg"]
    n = 8000
    counts = np.bincount([ds.family_index(item_rng(0, 0, 0, i)) for i in range(n)], minlength=4)
    expected = np.array([9, 3, 3, 1]) / 16
    assert np.all(np.abs(counts / n - expected) < 4 * np.sqrt(expected * (1 - expected) / n))
    # and the items themselves come from the drawn family
    fam = {"sem_seg": ("ade20k", "cocostuff", "mapillary", "vlpart", "coco/train2017/000000000009",
                       "coco/train2017/000000000025"),
           "refer_seg": ("refer_seg",), "vqa": ("coco/train2017/00000000003",), "reason_seg": ("reason_seg",)}
    for i in range(24):
        name = ds.names[ds.family_index(item_rng(0, 0, 0, i))]
        path = ds[i]["image_path"].replace(os.sep, "/")
        assert any(k in path for k in fam[name]), (name, path)


def test_rate_zero_family_is_not_loaded_and_bad_rates_fail(root, tmp_path):
    ds = build_train_dataset({"dataset_dir": root, "dataset": "vqa||reason_seg", "sample_rates": "0,1"},
                             clip_size=28, sam_size=32)
    assert ds.names == ["reason_seg"]
    with pytest.raises(DataError, match="has 2 values for 4 datasets"):
        parse_rates("1,2", 4)
    with pytest.raises(DataError, match="mapillary"):
        build_train_dataset({"dataset_dir": str(tmp_path), "dataset": "sem_seg", "sample_rates": "1",
                             "sem_seg_data": "mapillary"})


def _key(item):
    return (item["image_path"], tuple(item["conversations"]), float(item["masks"].sum()))


def test_items_are_deterministic_and_differ_per_rank_and_epoch(root):
    a, b = _train(root), _train(root)
    assert [_key(a[i]) for i in range(16)] == [_key(b[i]) for i in range(16)]
    other_rank = build_train_dataset({"dataset_dir": root}, clip_size=28, sam_size=32, rank=1)
    assert [_key(a[i]) for i in range(16)] != [_key(other_rank[i]) for i in range(16)]
    other_seed = _train(root, seed=1)
    assert [_key(a[i]) for i in range(16)] != [_key(other_seed[i]) for i in range(16)]
    first = [_key(a[i]) for i in range(16)]
    a.set_epoch(1)
    assert [_key(a[i]) for i in range(16)] != first
    a.set_epoch(0)
    assert [_key(a[i]) for i in range(16)] == first
    # the global generators play no part
    random.seed(123)
    np.random.seed(123)
    assert [_key(a[i]) for i in range(4)] == first[:4]


def _loader(ds, workers, persistent=False):
    return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers,
                                       worker_init_fn=worker_init_fn, persistent_workers=persistent,
                                       collate_fn=lambda x: x)


def test_workers_give_the_same_stream_and_epoch_reaches_persistent_workers(root):
    ds = _train(root, n=12)
    serial = [_key(it) for it in _loader(ds, 0)]
    loader = _loader(ds, 2, persistent=True)
    assert [_key(it) for it in loader] == serial
    ds.set_epoch(3)
    epoch3 = [_key(it) for it in loader]
    assert epoch3 != serial
    assert epoch3 == [_key(ds[i]) for i in range(12)]


def _worker_state(_):
    info = torch.utils.data.get_worker_info()
    return info.id, random.random(), float(np.random.random()), float(torch.rand(()))


class _Probe(torch.utils.data.Dataset):
    def __init__(self, rank):
        from lisa.data.rng import EpochCounter

        self.seed, self.rank, self.epoch_state = 0, rank, EpochCounter()

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return _worker_state(i)


def test_worker_init_fn_seeds_global_generators_per_rank_and_worker():
    def states(rank):
        loader = torch.utils.data.DataLoader(_Probe(rank), batch_size=None, num_workers=2,
                                             worker_init_fn=worker_init_fn)
        return {s[0]: s[1:] for s in loader}  # first draw of each worker

    r0, r0_again, r1 = states(0), states(0), states(1)
    assert r0 == r0_again  # reproducible
    assert r0[0] != r0[1]  # workers differ
    assert r0[0] != r1[0] and r0[1] != r1[1]  # ranks differ
