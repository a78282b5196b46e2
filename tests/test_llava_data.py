"""The pieces of LLaVA-style training and chat: `lisa data subset`, passes over the data (with
modality/length grouping), VQA data without --dataset_dir, text-only records, template and sampling defaults."""

import json

import numpy as np
import pytest

from helpers.llava import write_llava_data


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    return write_llava_data(tmp_path_factory.mktemp("mix"), n_textvqa=6, n_coco=4, text_only=2)


def test_subset_filters_samples_and_counts(mix, tmp_path, capsys):
    from lisa.data.cli import main
    from lisa.data.subset import subset_records

    records = mix["records"]
    kept, counts = subset_records(records, ["textvqa"], sample=4, seed=0)
    assert (counts.read, counts.text_only, counts.matched, counts.written) == (12, 2, 6, 4)
    assert all("textvqa" in r["image"] for r in kept)
    assert [r["id"] for r in kept] == sorted((r["id"] for r in kept), key=[x["id"] for x in records].index)
    assert subset_records(records, ["textvqa"], sample=4, seed=0)[0] == kept  # the seed decides
    assert {r["id"] for r in subset_records(records, ["textvqa"], sample=4, seed=1)[0]} != {r["id"] for r in kept} \
        or {r["id"] for r in subset_records(records, ["textvqa"], sample=4, seed=2)[0]} != {r["id"] for r in kept}
    no_text, c = subset_records(records, drop_text_only=True)
    assert c.written == 10 and all("image" in r for r in no_text)
    both, c = subset_records(records, ["textvqa", "coco"])
    assert c.per_pattern == {"textvqa": 6, "coco": 4} and c.written == 10

    out = tmp_path / "sub.json"
    argv = ["subset", str(mix["json"]), "--out", str(out), "--drop_text_only", "--sample", "3", "--seed", "7"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "read 12 records" in printed and "10 with an image, 2 text only" in printed
    assert "after --drop_text_only: 10" in printed and "wrote 3 records" in printed
    assert len(json.loads(out.read_text())) == 3
    assert main(["subset", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
    assert "file not found" in capsys.readouterr().err
    (tmp_path / "obj.json").write_text("{}")
    assert main(["subset", str(tmp_path / "obj.json"), "--out", str(out)]) == 2
    assert "expected a JSON list" in capsys.readouterr().err
    assert main(["subset", str(mix["json"]), "--out", str(out), "--sample", "0"]) == 2


def test_pass_order_groups_by_modality_and_length():
    from lisa.data.passes import pass_order

    rng = np.random.default_rng(0)
    lengths = [int(v) for v in rng.integers(1, 50, 23)] + [-int(v) for v in rng.integers(1, 50, 9)]
    order = pass_order(lengths, np.random.default_rng(1), 4, group_by_length=True)
    assert sorted(order) == list(range(32))
    groups = [order[k:k + 4] for k in range(0, 28, 4)]  # 5 full image groups, 2 full text-only ones
    for g in groups:
        assert len({lengths[i] > 0 for i in g}) == 1  # one modality per global micro-batch
        assert [abs(lengths[i]) for i in g] == sorted((abs(lengths[i]) for i in g), reverse=True)
    assert sorted(pass_order(lengths, np.random.default_rng(1), 4, group_by_length=False)) == list(range(32))


def test_passes_split_the_records_between_ranks_without_replacement(mix, tmp_path):
    from lisa.data import build_train_dataset
    from lisa.data.passes import DataPassDataset

    args = {"dataset_dir": str(tmp_path / "no_such_folder"), "dataset": "vqa", "sample_rates": "1",
            "vqa_data": str(mix["json"]), "image_folder": str(mix["images"])}
    families = build_train_dataset(args, clip_size=28, sam_size=32).families  # no --dataset_dir needed
    seen = []
    for rank in (0, 1):
        ds = DataPassDataset(families, batch_size=5, world_size=2, rank=rank, seed=3, group_by_length=True)
        ds.set_epoch(1)
        # 12 records in micro-batches of 5 per rank: the second (last) step is short, on rank 0 only
        assert ds.steps_per_epoch == 2 and len(ds) == (5 + 2 if rank == 0 else 5 + 0)
        seen += [ds[k]["image_path"] for k in range(len(ds))]
    assert len(seen) == len(set(seen)) == 12  # every record once, text-only ones included
    text_only = [s for s in seen if "record t" in s]
    assert len(text_only) == 2
    item = DataPassDataset(families, batch_size=2)[0]
    assert item["images_clip"].shape == (3, 28, 28)
    with pytest.raises(Exception, match="dataset_dir"):
        build_train_dataset(dict(args, vqa_data="llava_instruct_150k"), clip_size=28, sam_size=32)


def test_template_and_sampling_defaults_follow_the_model_kind():
    from types import SimpleNamespace

    from lisa.conversation import model_name_from_path, template_for_model_name
    from lisa.inference.pipeline import LisaPipeline, pick_template

    names = {"liuhaotian/llava-v1.5-7b": "llava_v1", "llava-llama-2-13b-chat": "llava_llama_2",
             "llava-v1.6-mistral-7b": "mistral_instruct", "llava-v1.6-34b": "chatml_direct",
             "runs/llava-v1.5-13b-lora/checkpoint-500": "llava_v1", "my-model": "llava_v0", "mpt-7b-llava": "mpt"}
    for path, mode in names.items():
        assert template_for_model_name(model_name_from_path(path)) == mode, path
    llava = SimpleNamespace(config=SimpleNamespace(conv_type=None, has_seg_head=False))
    lisa = SimpleNamespace(config=SimpleNamespace(conv_type=None, has_seg_head=True))
    trained = SimpleNamespace(config=SimpleNamespace(conv_type="chatml_direct", has_seg_head=False))
    assert pick_template(llava, "x/llava-v1.5-7b-task-lora") == "llava_v1"
    assert pick_template(lisa, "x/my-model") == "llava_v1"  # LISA's own default, whatever the name
    assert pick_template(trained, "x/llava-v1.5") == "chatml_direct"  # what the model was trained with
    assert pick_template(llava, "x/my-model", "mistral_instruct") == "mistral_instruct"  # --conv-mode wins
    made = {}

    class Probe(LisaPipeline):
        def __init__(self, model, tokenizer, conv_type=None, temperature=0.0, **kw):
            self.model = model
            made.update(conv_type=conv_type, temperature=temperature)

    assert Probe.for_model(llava, None, "x/llava-v1.5-7b").chat_temperature == 0.2  # LLaVA's cli.py
    assert made == {"conv_type": "llava_v1", "temperature": 0.0}  # the API stays greedy unless asked
    assert Probe.for_model(lisa, None, "x/LISA-7B-v1").chat_temperature == 0.0  # LISA answers greedily
    Probe.for_model(llava, None, "x/llava-v1.5-7b", temperature=0.7)
    assert made["temperature"] == 0.7


def test_web_ui_labels_answers_by_model_kind():
    from lisa.webui.ui import render_conversation

    assert "<b>LLaVA:</b> hi" in render_conversation([("q", "hi")], "LLaVA")
    assert "<b>LISA:</b> hi" in render_conversation([("q", "hi")])
