"""The demo model's start: token importance (IDF), and a [SEG] state that follows the question's words."""

import copy

import pytest
import torch

from lisa.demo.init_weights import token_importance
from lisa.demo.tiny_model import DEMO_SIZES, build_demo_model
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


@torch.no_grad()
def test_sam_starts_as_a_colour_autoencoder(tokenizer):
    """Each low-resolution mask pixel's first three features follow the colour of its own 2x2-pixel
    cell of SAM's input: a red square drawn in the image is red exactly where it is."""
    from lisa.demo.init_weights import N_COLOUR, pixel_features

    model = build_demo_model(tokenizer, sizes=_sizes(tokenizer))
    size = model.config.sam_image_size
    pixels = torch.zeros(1, 3, size, size)
    pixels[0, 0, 40:64, 16:48] = 2.0  # a block of high red channel; mask pixels (20..31, 8..23)
    emb = model.sam.vision_encoder(pixels).last_hidden_state
    feats = pixel_features(model.sam.mask_decoder, emb)[0]
    assert feats.shape[-1] == size // 2
    red = feats[0]
    inside, outside = red[20:32, 8:24], torch.cat([red[:18].flatten(), red[34:].flatten()])
    assert float(inside.min()) > float(outside.max())  # separable by a threshold: a mask
    assert emb.shape[1] >= N_COLOUR


@torch.no_grad()
def test_open_channels_reach_the_mask_features_where_they_are(tokenizer):
    """An encoder feature in an open channel shows up in the matching per-pixel feature, on the
    4x4 mask pixels of its token only; without open channels it hardly shows."""
    from lisa.demo.init_weights import FIXED, PIXEL_FIXED, pixel_features

    gains = {}
    for open_channels in (0, 4):
        model = build_demo_model(tokenizer, sizes=_sizes(tokenizer), open_channels=open_channels)
        size = model.config.sam_image_size
        emb = model.sam.vision_encoder(torch.zeros(1, 3, size, size)).last_hidden_state
        bumped = emb.clone()
        bumped[0, FIXED + 2, 5, 7] += 2.0  # open channel 2 at token (5, 7)
        dec = model.sam.mask_decoder
        delta = (pixel_features(dec, bumped) - pixel_features(dec, emb))[0]
        target = delta[PIXEL_FIXED + 2]
        gains[open_channels] = float(target[20:24, 28:32].mean())
        if open_channels:
            assert float(target[20:24, 28:32].min()) > 0.3
            away = target.clone()
            away[20:24, 28:32] = 0
            assert float(away.abs().max()) < 1e-6
    assert gains[4] > 20 * abs(gains[0]), gains


PRETRAIN_STEPS = 25


def _pretrained(tokenizer, data, hold):
    from lisa.demo.pretrain import pretrain_sam_encoder
    from lisa.demo.tiny_model import OPEN_CHANNELS

    model = build_demo_model(tokenizer, sizes=_sizes(tokenizer))
    start = copy.deepcopy(model.sam.vision_encoder)
    summary = pretrain_sam_encoder(model, data, PRETRAIN_STEPS, open_channels=OPEN_CHANNELS, batch_size=4, hold=hold,
                                   progress=False)
    return model, start, summary


def test_encoder_pretraining_learns_kind_and_holds_colour(tokenizer, tmp_path):
    """The kind and area loss falls; with the pull (``hold``) the colour/constant/position outputs that the
    mask decoder reads move several times less than without it."""
    from lisa.data.sem_seg import sem_seg_source
    from lisa.demo.init_weights import FIXED
    from lisa.demo.pretrain import SEMANTIC_SET, shape_targets
    from lisa.demo.semantic_shapes import write_semantic_shapes

    write_semantic_shapes(tmp_path, 12, seed=0, progress=False)
    source = sem_seg_source(str(tmp_path), SEMANTIC_SET)
    pixels = torch.stack([shape_targets(source, i, 128, 64)[0] for i in range(4)])
    drift = {}
    for hold in (10.0, 0.0):
        model, start, summary = _pretrained(tokenizer, tmp_path, hold)
        assert len(summary["loss"]) == PRETRAIN_STEPS and summary["final_pixel_accuracy"] is not None
        assert summary["final_area_mse"] is not None
        if hold:
            first, last = summary["loss"][:5], summary["loss"][-5:]
            assert sum(last) < 0.8 * sum(first), summary["loss"]
        with torch.no_grad():
            before, after = start(pixels).last_hidden_state, model.sam.vision_encoder(pixels).last_hidden_state
        drift[hold] = float((after - before)[:, :FIXED].norm() / before[:, :FIXED].norm())
    assert drift[10.0] < 0.5 * drift[0.0], drift


def test_encoder_pretraining_needs_open_channels_and_kind_maps(tokenizer, tmp_path):
    from lisa.demo.pretrain import pretrain_sam_encoder

    model = build_demo_model(tokenizer, sizes=_sizes(tokenizer))
    with pytest.raises(ValueError, match="open_channels"):
        pretrain_sam_encoder(model, tmp_path, 5, open_channels=0, progress=False)
    from lisa.data.problems import DataError

    with pytest.raises(DataError, match="mapillary"):
        pretrain_sam_encoder(model, tmp_path, 5, open_channels=8, progress=False)
