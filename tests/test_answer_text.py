"""Answers as people read them: "Sure, [SEG]." (no space before the punctuation after an added
token, the token ids unchanged), and a plain LLaVA model's answer never talks about masks."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lisa.chat.cli import run_one
from lisa.inference.pipeline import LisaPipeline
from lisa.tokenization import decode, decode_answer, encode, load_tokenizer

ORACLE = Path(__file__).parent / "fixtures" / "tokenizer_oracle"
VARIANTS = sorted(json.loads((ORACLE / "cases.json").read_text(encoding="utf-8"))["variants"])
ANSWERS = [
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "It is [SEG].",
    "[SEG].",
    "[SEG], [SEG] and [SEG]!",
    "Is it [SEG]? Yes: [SEG]; and [SEG].",
    "The cup ([SEG]) is left of the plate [SEG].",
    "Sure, the segmentation result is [SEG]. The dog is brown because of its fur.",
    "It is [SEG] (the dog).",
]


@pytest.fixture(scope="module", params=VARIANTS)
def tok(request):
    return load_tokenizer(ORACLE / request.param)


def test_answers_decode_as_written_and_keep_their_ids(tok):
    for text in ANSWERS:
        ids = encode(tok, text, add_bos=False)
        assert decode_answer(tok, ids) == text
        assert encode(tok, decode_answer(tok, ids), add_bos=False) == ids  # the same tokens
        # the 4.31-exact decoding still has the join's spaces
        assert decode(tok, ids).replace(" ", "") == text.replace(" ", "")


def test_decode_answer_leaves_other_spacing_alone(tok):
    for text in ["It is a wall .", "A [SEG] B", "x , y", "Sure, 12345."]:
        assert decode_answer(tok, encode(tok, text, add_bos=False)) == text


def _script_answer(model, tok, text):
    """Make greedy decoding emit exactly the tokens of ``text`` then </s>."""
    script = encode(tok, text, add_bos=False) + [tok.eos_token_id]
    head = model.llm.get_output_embeddings()
    orig = head.forward
    step = {"n": 0}

    def forward(x):
        out = orig(x)
        out = torch.full_like(out, -1e4)
        out[..., script[min(step["n"], len(script) - 1)]] = 1e4
        step["n"] += 1
        return out

    head.forward = forward
    return lambda: setattr(head, "forward", orig)


def test_pipeline_and_chat_print_clean_answers(tiny_model, rgb_image, tmp_path, capsys):
    model, tok = tiny_model
    pipe = LisaPipeline(model, tok, max_new_tokens=20)
    restore = _script_answer(model, tok, "Sure, it is [SEG].")
    try:
        result = pipe(rgb_image, "Where is the red box?")
    finally:
        restore()
    assert result.text == "Sure, it is [SEG]." and len(result.masks) == 1
    assert tok.convert_tokens_to_ids("[SEG]") in result.output_ids

    path = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray(rgb_image).save(path)
    restore = _script_answer(model, tok, "[SEG], [SEG].")
    try:
        run_one(pipe, str(path), "Segment both.", str(tmp_path / "vis"), as_json=False)
    finally:
        restore()
    out = capsys.readouterr().out
    assert "text_output: [SEG], [SEG].\n" in out and "no mask" not in out


def test_llava_answers_never_mention_masks(tmp_path, capsys):
    from lisa.checkpoint.tiny import make_tiny_llava

    make_tiny_llava(tmp_path / "llava", version="v1.5")
    pipe = LisaPipeline.from_pretrained(tmp_path / "llava", precision="fp32", device="cpu", max_new_tokens=3,
                                        progress=False)
    assert not pipe.segments
    from PIL import Image

    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "img.png")
    report = run_one(pipe, str(tmp_path / "img.png"), "Describe the image.", str(tmp_path / "vis"), as_json=False)
    out = capsys.readouterr().out
    assert report["mask_files"] == [] and "text_output:" in out
    assert "mask" not in out.replace(report["text"], "") and "[SEG]" not in out.replace(report["text"], "")


def test_lisa_answers_without_seg_say_so(tiny_model, rgb_image, tmp_path, capsys):
    model, tok = tiny_model
    pipe = LisaPipeline(model, tok, max_new_tokens=20)
    from PIL import Image

    Image.fromarray(rgb_image).save(tmp_path / "img.png")
    restore = _script_answer(model, tok, "There are 3 shapes.")
    try:
        run_one(pipe, str(tmp_path / "img.png"), "How many shapes?", str(tmp_path / "vis"), as_json=False)
    finally:
        restore()
    out = capsys.readouterr().out
    assert "text_output: There are 3 shapes.\n" in out and "(no [SEG] in the answer: no mask)" in out
