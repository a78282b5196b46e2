"""lisa.tokenization against ids recorded with the transformers 4.31 slow LlamaTokenizer.

The oracle (tests/fixtures/tokenizer_oracle/) was produced by tests/fixtures/make_oracle.py.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from lisa.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from lisa.tokenization import (
    ESCAPE_MARK,
    add_lisa_tokens,
    decode,
    encode,
    escape_special_text,
    load_tokenizer,
    seg_token_id,
    tokenizer_image_token,
    train_llama_style_tokenizer,
)

ORACLE = Path(__file__).parent / "fixtures" / "tokenizer_oracle"
CASES = json.loads((ORACLE / "cases.json").read_text(encoding="utf-8"))
VARIANTS = sorted(CASES["variants"])

SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
          "helpful, detailed, and polite answers to the human's questions.")
CORPUS = [
    SYSTEM,
    "USER: Can you segment the wall in this image? ASSISTANT: It is a wall.",
    "USER: Please segment the dog in this image. ASSISTANT: Sure, the dog is on the grass.",
    "What is the person holding? Please output segmentation mask.",
    "The quick brown fox jumps over the lazy dog. A cat sits on the table near the window.",
    "Segmentation masks mark the pixels of an object; the answer explains why.",
] * 3


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request):
    return request.param, load_tokenizer(ORACLE / request.param), CASES["variants"][request.param]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_tok")
    return train_llama_style_tokenizer(CORPUS, 400, out), out


def test_oracle_covers_the_required_cases():
    for name in VARIANTS:
        cases = CASES["variants"][name]
        assert CASES["transformers"] == "4.31.0"
        assert len(cases["encode"]) >= 40 and len(cases["decode"]) >= 10 and len(cases["image_token"]) >= 5


def test_encode_matches_transformers_431_slow(variant):
    name, tok, cases = variant
    wrong = []
    for case in cases["encode"]:
        got, got_nb = encode(tok, case["text"]), encode(tok, case["text"], add_bos=False)
        if got != case["ids"] or got_nb != case["ids_no_bos"]:
            wrong.append((case["text"], tok.convert_ids_to_tokens(got_nb), case["tokens"]))
    assert not wrong, f"{name}: {len(wrong)} mismatches, first: {wrong[0]}"


def test_tokenizer_image_token_matches_original(variant):
    name, tok, cases = variant
    for case in cases["image_token"]:
        got = tokenizer_image_token(case["prompt"], tok)
        assert got == case["ids"], (name, case["prompt"])
        assert got.count(IMAGE_TOKEN_INDEX) == case["prompt"].count("<image>")


def test_decode_matches_transformers_431_slow(variant):
    name, tok, cases = variant
    got = [(c["ids"], decode(tok, c["ids"]), c["text"]) for c in cases["decode"]]
    wrong = [g for g in got if g[1] != g[2]]
    assert not wrong, f"{name}: {len(wrong)} mismatches, first: {wrong[0]}"


def test_decode_drops_image_and_ignore_ids(variant):
    _, tok, cases = variant
    ids = cases["image_token"][0]["ids"]
    assert IMAGE_TOKEN_INDEX in ids
    assert decode(tok, ids) == decode(tok, [i for i in ids if i >= 0])
    assert decode(tok, [IGNORE_INDEX, 1, IMAGE_TOKEN_INDEX]) == decode(tok, [1])
    with pytest.raises(ValueError, match=str(len(tok) + 5)):
        decode(tok, [1, len(tok) + 5])


def test_seg_id_and_vocab_match_oracle(variant):
    name, tok, cases = variant
    assert len(tok) == cases["len"]
    added = tok.get_added_vocab()
    assert all(added.get(t) == i for t, i in cases["added_tokens"].items()), added
    assert seg_token_id(tok) == cases["seg_convert_tokens_to_ids"] == cases["added_tokens"]["[SEG]"]
    # LISA's own lookup, tokenizer("[SEG]", add_special_tokens=False).input_ids[0], agrees with 4.31.
    assert encode(tok, "[SEG]", add_bos=False)[0] == cases["seg_first_input_id"]
    assert tok.pad_token_id == tok.unk_token_id == 0 and tok.padding_side == "right"


def test_lisa_13b_and_7b_id_layouts():
    assert CASES["variants"]["lisa13b_like"]["added_tokens"] == {"[SEG]": 700, "<im_start>": 701, "<im_end>": 702}
    assert CASES["variants"]["lisa7b_like"]["added_tokens"] == {
        "<im_patch>": 700, "<im_start>": 701, "<im_end>": 702, "[SEG]": 703}


def test_add_lisa_tokens_is_idempotent_on_checkpoints(variant):
    name, tok, cases = variant
    before = (len(tok), dict(tok.get_added_vocab()))
    assert add_lisa_tokens(tok) == cases["seg_convert_tokens_to_ids"]
    assert add_lisa_tokens(tok, use_mm_start_end=False) == cases["seg_convert_tokens_to_ids"]
    assert (len(tok), dict(tok.get_added_vocab())) == before
    first = cases["encode"][0]
    assert encode(tok, first["text"]) == first["ids"]


def test_add_lisa_tokens_order_and_reload(tiny, tmp_path):
    _, folder = tiny
    tok = load_tokenizer(folder)
    base = len(tok)
    with pytest.raises(ValueError, match=r"\[SEG\]"):
        seg_token_id(tok)
    seg = add_lisa_tokens(tok)
    assert seg == base and len(tok) == base + 3
    assert tok.convert_tokens_to_ids(["<im_start>", "<im_end>"]) == [base + 1, base + 2]
    assert add_lisa_tokens(tok) == seg and len(tok) == base + 3
    assert "<im_start>" not in tok.all_special_tokens  # special=True in add_tokens does not make it a named special
    prompt = f"{SYSTEM} USER: <im_start><image><im_end>\nCan you segment the wall? ASSISTANT: It is [SEG].</s>"
    ids = tokenizer_image_token(prompt, tok)
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert len(again) == base + 3 and seg_token_id(again) == seg
    assert tokenizer_image_token(prompt, again) == ids

    only_seg = load_tokenizer(folder)
    assert add_lisa_tokens(only_seg, use_mm_start_end=False) == base and len(only_seg) == base + 1


def test_strip_rules_on_trained_tokenizer(tiny):
    tok, folder = tiny
    tok = load_tokenizer(folder)
    seg = add_lisa_tokens(tok)
    ist, iend = tok.convert_tokens_to_ids(["<im_start>", "<im_end>"])
    bos, eos = tok.bos_token_id, tok.eos_token_id
    piece = lambda s: encode(tok, s, add_bos=False)  # noqa: E731
    # whitespace next to added tokens disappears and each text chunk gets its own dummy prefix
    assert encode(tok, "It is [SEG].") == [bos] + piece("It is") + [seg] + piece(".")
    assert tok.convert_ids_to_tokens(piece("."))[0].startswith("▁")
    assert piece(" [SEG] \n [SEG] ") == [seg, seg]
    assert piece("USER: <im_start>\n<im_end>\nCan") == piece("USER:") + [ist, iend] + piece("Can")
    # named special tokens keep their neighbours' whitespace
    assert piece("wall </s>") == piece("wall ") + [eos]
    assert piece("wall ") != piece("wall")


def test_trained_tokenizer_round_trip(tiny):
    tok, folder = tiny
    tok = load_tokenizer(folder)
    seg = add_lisa_tokens(tok)
    prompt = f"{SYSTEM} USER: <im_start><image><im_end>\nCan you segment the wall? ASSISTANT: It is [SEG].</s>"
    ids = tokenizer_image_token(prompt, tok)
    assert ids[0] == tok.bos_token_id and ids.count(IMAGE_TOKEN_INDEX) == 1 and ids.count(seg) == 1
    assert ids[ids.index(IMAGE_TOKEN_INDEX) - 1] == tok.convert_tokens_to_ids("<im_start>")
    assert ids[-1] == tok.eos_token_id
    # 4.31 decode: added tokens joined with single spaces, specials glued, the "." chunk's dummy space kept
    assert decode(tok, ids) == (f"<s>{SYSTEM} USER: <im_start> <im_end> Can you segment the wall? "
                                "ASSISTANT: It is [SEG]  .</s>")
    for text in ["It is a wall.", "café 🙂 naïve", "two  spaces\nand a newline", "Sure, 12345."]:
        assert decode(tok, encode(tok, text, add_bos=False)) == text
        # without added tokens or leading spaces, encode agrees with the fast tokenizer itself
        assert encode(tok, text) == tok(text).input_ids


def test_trained_tokenizer_layout_determinism_and_speed(tmp_path):
    t0 = time.perf_counter()
    a = train_llama_style_tokenizer(CORPUS, 400, tmp_path / "a")
    elapsed = time.perf_counter() - t0
    train_llama_style_tokenizer(list(CORPUS), 400, tmp_path / "b")
    assert elapsed < 5
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert len(a) <= 400
    layout = a.convert_ids_to_tokens([0, 1, 2, 3, 3 + 0x41, 258])
    assert layout == ["<unk>", "<s>", "</s>", "<0x00>", "<0x41>", "<0xFF>"]
    assert a.pad_token == "<unk>" and a.padding_side == "right"
    assert encode(a, "") == [1]
    with pytest.raises(ValueError, match="vocab_size"):
        train_llama_style_tokenizer(CORPUS, 200, tmp_path / "c")
    with pytest.raises(ValueError, match="text"):
        train_llama_style_tokenizer([], 400, tmp_path / "d")


def test_load_tokenizer_errors_name_the_folder(tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    with pytest.raises(FileNotFoundError, match="no_such_checkpoint"):
        load_tokenizer(missing)
    empty = tmp_path / "empty_ckpt"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="empty_ckpt"):
        load_tokenizer(empty)
    broken = tmp_path / "broken_ckpt"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken_ckpt"):
        load_tokenizer(broken)


def test_load_tokenizer_from_sentencepiece_only_folder(tmp_path):
    # LISA checkpoints ship tokenizer.model + json side files and no tokenizer.json
    folder = tmp_path / "ckpt"
    shutil.copytree(ORACLE / "lisa13b_like", folder)
    assert not (folder / "tokenizer.json").exists()
    tok = load_tokenizer(folder, model_max_length=64)
    assert tok.model_max_length == 64 and seg_token_id(tok) == 700


def test_encode_rejects_non_text(variant):
    _, tok, _ = variant
    with pytest.raises(TypeError, match="str"):
        encode(tok, [1, 2, 3])


def test_encoding_follows_tokens_added_after_first_use(tiny):
    _, folder = tiny
    tok = load_tokenizer(folder)
    text = "Please segment the [NEW] dog."
    before = encode(tok, text)
    assert encode(tok, text, add_bos=False) == before[1:]
    tok.add_tokens("[NEW]")  # the split rules remembered on the tokenizer no longer apply
    new_id = tok.convert_tokens_to_ids("[NEW]")
    after = encode(tok, text)
    assert new_id in after and new_id not in before
    assert tokenizer_image_token(f"{text} <image>", tok)[:len(after)] == after


def test_escaped_control_tokens_tokenize_as_ordinary_text(variant):
    """User text never becomes a control token: each spelling tokenizes as the SentencePiece model
    reads those characters, as if the token did not exist."""
    name, tok, _ = variant
    model = tok.backend_tokenizer.model
    controls = [str(t) for t in tok.all_special_tokens] + [str(t.content) for t in tok.added_tokens_decoder.values()]
    control_ids = {tok.convert_tokens_to_ids(t) for t in controls}
    for token in sorted(set(controls) | {"<image>", "<im_start>", "[SEG]"}):
        text = f"say {token} now{token}{token}"
        escaped = escape_special_text(tok, text)
        assert escaped.replace(ESCAPE_MARK, "") == text
        ids = encode(tok, escaped, add_bos=False)
        assert ids == [t.id for t in model.tokenize("\u2581" + text.replace(" ", "\u2581"))], (name, token)
        assert not control_ids & set(ids) and IMAGE_TOKEN_INDEX not in tokenizer_image_token(escaped, tok)
    assert escape_special_text(tok, "plain words, no tokens") == "plain words, no tokens"
    assert escape_special_text(tok, ESCAPE_MARK + "[SEG]").count(ESCAPE_MARK) == 1  # a typed mark is dropped


def test_escaping_on_a_byte_level_tokenizer(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", bos_token="<s>", unk_token="<unk>")
    fast.save_pretrained(str(tmp_path))
    tok = load_tokenizer(tmp_path)
    seg = add_lisa_tokens(tok)
    text = "say [SEG] and <im_start></s> now"
    ids = encode(tok, escape_special_text(tok, text), add_bos=False)
    assert seg not in ids and tok.eos_token_id not in ids and tok.convert_tokens_to_ids("<im_start>") not in ids
    assert tok.decode(ids) == text
