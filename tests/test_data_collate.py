"""Collation: tokenization, label masking, grouping, truncation (lisa.data.collate)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.fixtures import write_fixture_tree
from lisa.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from lisa.data import build_train_dataset
from lisa.data.collate import collate, make_collate_fn
from lisa.data.problems import DataError, ProblemCounter
from lisa.data.templates import build_conversation
from lisa.tokenization import encode, load_tokenizer, seg_token_id

ORACLE = Path(__file__).parent / "fixtures" / "tokenizer_oracle"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ORACLE / "lisa7b_like")


def _item(convs, n_masks=None, h=6, w=8, path="img.jpg"):
    n = sum(c.count("[SEG]") for c in convs) if n_masks is None else n_masks
    return {"image_path": path, "images": torch.zeros(3, 16, 16), "images_clip": torch.zeros(3, 14, 14),
            "conversations": convs, "masks": torch.arange(n).float().view(n, 1, 1).expand(n, h, w).clone(),
            "label": torch.full((h, w), 255, dtype=torch.long), "resize": (12, 16),
            "questions": [f"q{k}" for k in range(len(convs))],
            "sampled_classes": [f"c{k}" for k in range(len(convs))], "inference": False}


def _seg(question, answer="It is [SEG].", conv_type="llava_v1"):
    return build_conversation([("<image>\n" + question, answer)], conv_type)


def _supervised_spans(labels):
    spans, cur = [], []
    for k, v in enumerate(labels.tolist()):
        if v != IGNORE_INDEX:
            cur.append(k)
        elif cur:
            spans.append(cur)
            cur = []
    if cur:
        spans.append(cur)
    return spans


def test_labels_supervise_exactly_the_answers_and_closing_eos(tok):
    vqa = build_conversation([("<image>\nWhat is in the picture?", "Random noise in many colours."),
                              ("Is it bright?", "Moderately.")])
    batch = collate([_item([_seg("Can you segment the wall in this image?"), vqa])], tok)
    ids, labels = batch["input_ids"], batch["labels"]
    for row, answers in ((0, ["It is [SEG]."]), (1, ["Random noise in many colours.", "Moderately."])):
        spans = _supervised_spans(labels[row])
        assert len(spans) == len(answers)
        for span, answer in zip(spans, answers):
            expected = encode(tok, answer + "</s>", add_bos=False)
            assert ids[row, span].tolist() == expected
            assert labels[row, span].tolist() == expected
            assert expected[-1] == tok.eos_token_id


def test_image_token_wrapping_and_single_image_id(tok):
    conv = _seg("Please segment the sky in this image.")
    wrapped = conv.replace("<image>", "<im_start><image><im_end>")
    for text, expect_mm in ((conv, True), (wrapped, True), (conv, False)):
        batch = collate([_item([text])], tok, use_mm_start_end=expect_mm)
        row = batch["input_ids"][0].tolist()
        assert row.count(IMAGE_TOKEN_INDEX) == 1
        p = row.index(IMAGE_TOKEN_INDEX)
        has_mm = row[p - 1] == tok.convert_tokens_to_ids("<im_start>")
        assert has_mm == expect_mm
        if expect_mm:
            assert row[p + 1] == tok.convert_tokens_to_ids("<im_end>")
            assert batch["conversation_list"][0].count("<im_start><image><im_end>") == 1


def test_grouping_offsets_padding_and_masks(tok):
    a = _item([_seg("Can you segment the a in this image?"), _seg("Please segment the b in this image."),
               _seg("What is c in this image? Please output segmentation mask.")], path="a.jpg")
    b = _item([_seg("Can you segment the d in this image?", "Sure, the segmentation result is [SEG].")],
              path="b.jpg")
    batch = collate([a, b], tok)
    assert batch["offset"].tolist() == [0, 3, 4]
    assert batch["images"].shape == (2, 3, 16, 16) and batch["images_clip"].shape == (2, 3, 14, 14)
    assert [m.shape[0] for m in batch["masks_list"]] == [3, 1]
    assert batch["image_paths"] == ["a.jpg", "b.jpg"]
    lengths = batch["attention_mask"].sum(1)
    assert batch["attention_mask"].dtype == torch.bool
    for row, n in enumerate(lengths.tolist()):
        assert torch.all(batch["input_ids"][row, n:] == tok.pad_token_id)
        assert torch.all(batch["labels"][row, n:] == IGNORE_INDEX)
        assert batch["input_ids"][row, n - 1] == tok.eos_token_id
    seg = seg_token_id(tok)
    assert int((batch["input_ids"] == seg).sum()) == sum(m.shape[0] for m in batch["masks_list"])
    assert batch["inference"] is False


def test_llama2_template_masks_instructions(tok):
    conv = _seg("Can you segment the wall in this image?", conv_type="llava_llama_2")
    batch = collate([_item([conv])], tok, conv_type="llava_llama_2")
    spans = _supervised_spans(batch["labels"][0])
    assert len(spans) == 1
    supervised = batch["input_ids"][0, spans[0]].tolist()
    assert supervised[-1] == tok.eos_token_id and seg_token_id(tok) in supervised
    inst = encode(tok, "[/INST]", add_bos=False)  # the answer starts right after "[/INST]"
    assert batch["input_ids"][0, spans[0][0] - len(inst): spans[0][0]].tolist() == inst
    assert supervised == encode(tok, "It is [SEG]. </s>", add_bos=False)


def test_truncation_drops_a_cut_seg_with_its_mask(tok):
    counter = ProblemCounter()
    short = _seg("Can you segment the wall in this image?")
    long = _seg("Can you segment the " + "very " * 60 + "tall wall in this image?")
    n_short = len(collate([_item([short])], tok)["input_ids"][0])
    n_long = len(collate([_item([long])], tok)["input_ids"][0])
    budget = n_short + 20  # spliced: tokens + 255 per image must fit model_max_length
    item = _item([long, short])  # masks 0 (long) and 1 (short)
    batch = collate([item], tok, model_max_length=budget + 255, counter=counter)
    assert n_long > budget
    assert batch["offset"].tolist() == [0, 1]
    assert batch["conversation_list"] == [short.replace("<image>", "<im_start><image><im_end>")]
    assert batch["masks_list"][0][:, 0, 0].tolist() == [1.0]  # the short conversation's own mask
    assert counter.stats()["truncated"] == 1
    assert batch["input_ids"].shape[1] + 255 <= budget + 255
    with pytest.raises(DataError, match="model_max_length"):
        collate([_item([long])], tok, model_max_length=budget + 255, counter=counter)
    # inference batches are never truncated
    val = dict(_item([long]), inference=True)
    assert collate([val], tok, model_max_length=budget + 255, counter=counter)["input_ids"].shape[1] == n_long


def test_truncation_keeps_a_partly_cut_text_answer(tok):
    counter = ProblemCounter()
    conv = build_conversation([("<image>\nDescribe it.", "It is " + "quite " * 80 + "nice.")])
    n = len(collate([_item([conv])], tok)["input_ids"][0])
    batch = collate([_item([conv])], tok, model_max_length=n - 30 + 255, counter=counter)
    assert batch["input_ids"].shape == (1, n - 30)
    assert int((batch["labels"] != IGNORE_INDEX).sum()) > 0
    assert counter.stats()["truncated"] == 0


def test_seg_mask_count_mismatch_is_an_error(tok):
    with pytest.raises(DataError, match="img.jpg: 1 \\[SEG\\] tokens .* but 2 masks"):
        collate([_item([_seg("Can you segment the wall in this image?")], n_masks=2)], tok)


def test_dataloader_batches_from_the_fixture_tree(tok, tmp_path):
    write_fixture_tree(tmp_path)
    ds = build_train_dataset({"dataset_dir": str(tmp_path)}, clip_size=28, sam_size=32,
                             samples_per_epoch=8)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=make_collate_fn(tok, counter=ds.counter))
    seg = seg_token_id(tok)
    for batch in loader:
        n_conv = batch["input_ids"].shape[0]
        assert batch["offset"][-1] == n_conv == len(batch["conversation_list"])
        assert torch.all((batch["input_ids"] == IMAGE_TOKEN_INDEX).sum(1) == 1)
        assert int((batch["input_ids"] == seg).sum()) == sum(m.shape[0] for m in batch["masks_list"])
        for masks, label in zip(batch["masks_list"], batch["label_list"]):
            assert masks.shape[1:] == label.shape
        assert (batch["labels"] != IGNORE_INDEX).any(dim=1).all()
    assert ds.stats()["label_mismatch"] == 0


def test_text_only_batches_collate_with_a_tokenizer_without_seg(tmp_path):
    from lisa.tokenization import train_llama_style_tokenizer

    plain = train_llama_style_tokenizer(["What is in the picture? Random noise in many colours."], 300,
                                        tmp_path / "tok")
    assert "[SEG]" not in plain.get_vocab()
    vqa = build_conversation([("<image>\nWhat is in the picture?", "Random noise.")])
    batch = collate([_item([vqa])], plain, use_mm_start_end=False)
    assert batch["offset"].tolist() == [0, 1] and batch["masks_list"][0].shape[0] == 0
    assert len(_supervised_spans(batch["labels"][0])) == 1
    with pytest.raises(DataError, match="0 \\[SEG\\] tokens"):
        collate([_item([vqa], n_masks=1)], plain, use_mm_start_end=False)
