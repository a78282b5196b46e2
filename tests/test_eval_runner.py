"""evaluate() over the fixture ReasonSeg val set with a model whose masks are known."""

import json

import pytest
import torch
from torch import nn

from helpers.fixtures import write_fixture_tree
from lisa.data import build_val_dataset
from lisa.evaluation import evaluate, format_table


@pytest.fixture(scope="module")
def val_set(tmp_path_factory, tiny_ckpt):
    root = tmp_path_factory.mktemp("evaldata")
    info = write_fixture_tree(root, families=("reason_seg",))
    ds = build_val_dataset(str(root), "ReasonSeg|val", clip_size=56, sam_size=128)
    return ds, info


class AllForeground(nn.Module):
    """Predicts every pixel as foreground for each [SEG] of the batch."""

    def __init__(self, seg_id):
        super().__init__()
        self.embed = nn.Embedding(4, 2)
        self.llm = type("L", (), {"get_input_embeddings": lambda _self: self.embed})()
        self.config = type("C", (), {"has_seg_head": True, "mm_use_im_start_end": True, "num_image_tokens": 16})()
        self.seg_id = seg_id
        self.calls = []

    def forward(self, input_ids, offset, label_list, inference=False, **kw):
        assert inference
        self.calls.append(input_ids.shape[0])
        k = int((input_ids == self.seg_id).sum())
        h, w = label_list[0].shape
        return {"pred_masks": [torch.full((k, h, w), 5.0)]}


def test_teacher_forced_metrics_equal_hand_computation(val_set, tiny_model):
    ds, info = val_set
    _, tok = tiny_model
    model = AllForeground(tok.convert_tokens_to_ids("[SEG]"))
    m = evaluate(model, tok, ds, "teacher", progress=False, name="ReasonSeg|val")
    px = info["pixels"]
    area = 24 * 32
    # image 1: its ignore box is excluded from both prediction and target
    i1, u1 = px["rs_val_1:target"], area - px["rs_val_1:ignore"]
    i2, u2 = px["rs_val_2:target"], area
    assert [s["intersection"] for s in m["samples"]] == [[i1], [i2]]
    assert [s["union"] for s in m["samples"]] == [[u1], [u2]]
    assert m["giou"] == pytest.approx((i1 / (u1 + 1e-5) + i2 / (u2 + 1e-5)) / (2 + 1e-5))
    assert m["ciou"] == pytest.approx((i1 + i2) / (u1 + u2 + 1e-10))
    assert [s["image_path"].rsplit("/", 1)[-1] for s in m["samples"]] == ["rs_val_1.jpg", "rs_val_2.jpg"]
    assert "ReasonSeg|val" in format_table([m])
    json.dumps(m)  # the metrics file must be serialisable


def test_all_queries_uses_every_text(val_set, tiny_model):
    ds, _ = val_set
    _, tok = tiny_model
    model = AllForeground(tok.convert_tokens_to_ids("[SEG]"))
    m = evaluate(model, tok, ds, "teacher", all_queries=True, progress=False)
    # rs_val_1 has two phrasings, rs_val_2 one
    assert [len(s["queries"]) for s in m["samples"]] == [2, 1]
    assert m["num_masks"] == 3
    assert model.calls == [2, 1]


def test_generate_protocol_reports_seg_rate(val_set, tiny_model, tmp_path):
    ds, _ = val_set
    model, tok = tiny_model
    m = evaluate(model, tok, ds, "generate", max_new_tokens=4, progress=False, save_masks=str(tmp_path))
    assert 0.0 <= m["seg_rate"] <= 1.0
    for s in m["samples"]:
        assert len(s["answers"]) == len(s["seg_counts"]) == len(s["iou"]) == 1
        # a missing [SEG] is an empty mask: IoU 0 against these non-empty targets
        if s["seg_counts"][0] == 0:
            assert s["iou"] == [0.0] and s["intersection"] == [0]
    assert len(list(tmp_path.glob("*_mask_0.jpg"))) == 2


def test_unknown_protocol_is_rejected(val_set, tiny_model):
    ds, _ = val_set
    model, tok = tiny_model
    with pytest.raises(ValueError, match="protocol"):
        evaluate(model, tok, ds, "beam")
