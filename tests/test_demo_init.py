"""The demo model's start: token importance (IDF), and a [SEG] state that follows the question's words."""

import copy

import pytest
import torch

from lisa.demo.init import token_importance
from lisa.demo.model import DEMO_SIZES, build_demo_model
from lisa.tokenization import add_lisa_tokens, train_llama_style_tokenizer

TEMPLATES = ["A chat between a curious human and an assistant. USER: ASSISTANT:", "Please segment the {x}."]
DATA = ([f"Which shape is {c}?" for c in ("red", "green", "blue", "yellow")] * 5
        + ["Segment the largest shape.", "Segment the leftmost shape."] * 5)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    tok = train_llama_style_tokenizer(TEMPLATES * 20 + DATA, 400, tmp_path_factory.mktemp("tok"))
    add_lisa_tokens(tok, use_mm_start_end=True)
    return tok


def _id(tok, word):
    return tok.convert_tokens_to_ids("\u2581" + word)


def test_token_importance(tokenizer):
    imp = token_importance(tokenizer, DATA, TEMPLATES)
    assert imp.shape == (len(tokenizer),) and float(imp.min()) >= 0.0 and float(imp.max()) == pytest.approx(1.0)
    assert imp[_id(tokenizer, "red")] > 0.5 and imp[_id(tokenizer, "shape")] == 0  # in every text: no information
    assert imp[_id(tokenizer, "chat")] == 0 and imp[_id(tokenizer, "segment")] == 0  # template words
    with pytest.raises(ValueError, match="one value per token"):
        build_demo_model(tokenizer, importance=imp[:-1], sizes=_sizes(tokenizer))


def _sizes(tok):
    sizes = copy.deepcopy(DEMO_SIZES)
    sizes["vocab"] = len(tok)
    return sizes


@torch.no_grad()
def _state(model, tok, question):
    text = f"{TEMPLATES[0].split(' USER')[0]} USER: {question} ASSISTANT:"
    ids = torch.tensor([tok(text)["input_ids"]])
    return model.llm(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]


def test_importance_start_puts_the_question_words_in_the_seg_state(tokenizer):
    """With importance weights the colour word moves the last hidden state several times more than
    in a plain mean over the whole prompt."""
    imp = token_importance(tokenizer, DATA, TEMPLATES)
    moved = {}
    for name, importance in (("uniform", None), ("importance", imp)):
        model = build_demo_model(tokenizer, sizes=_sizes(tokenizer), importance=importance)
        red, blue = (_state(model, tokenizer, f"Which shape is {c}?") for c in ("red", "blue"))
        moved[name] = float((red - blue).norm() / red.norm())
    assert moved["importance"] > 3 * moved["uniform"], moved
