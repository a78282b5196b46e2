"""Tokenizer loading and encoding that reproduce the ids of the original LISA stack.

The released LISA checkpoints were trained and are served with the transformers 4.31 *slow*
SentencePiece ``LlamaTokenizer`` (legacy mode). transformers 5 only has fast tokenizers, whose
handling of added tokens differs, so :func:`encode` re-creates the 4.31 rules on top of the fast
tokenizer's BPE model (verified against ids recorded with 4.31, see ``tests/fixtures/make_oracle.py``):

1. The text is split on every added token (``[SEG]``, ``<im_start>``, ``<im_end>``, ``<im_patch>``...)
   and on the named special tokens (``<s>``, ``</s>``, ``<unk>``).
2. Next to an added token that is not a named special token, all whitespace (``str.strip``) of the
   neighbouring text is removed on both sides. Named special tokens strip only what their
   ``lstrip``/``rstrip`` flags say (nothing, for LLaMA), so ``"hello </s> world"`` keeps its spaces.
3. Every remaining non-empty text chunk is encoded on its own, as SentencePiece does for a whole
   sentence: ``"▁"`` is prepended (dummy prefix), spaces become ``"▁"``, then BPE with byte fallback.
   So ``"It is [SEG]."`` -> ``▁It ▁is [SEG] ▁.`` (the ``"."`` chunk gets its own ``"▁"``; with a vocab
   that lacks ``"▁."`` this is ``"▁" "."``), and ``"<im_end>\\nCan"`` -> ``<im_end> ▁Can``.
4. ``<s>`` is prepended when ``add_bos`` (``tokenizer(text).input_ids``).

Text typed by a user must never become one of those control tokens (a typed ``[SEG]`` would ask
for a mask, a typed ``</s>`` would end the turn): :func:`escape_special_text` marks every spelling
of a control token in it with :data:`ESCAPE_MARK`, so rule 1 does not split there, and the mark is
dropped when the chunk is encoded: ``"[SEG]"`` then tokenizes as the ordinary characters it is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .constants import IM_END_TOKEN, IM_START_TOKEN, IMAGE_PATCH_TOKEN, IMAGE_TOKEN, IMAGE_TOKEN_INDEX, SEG_TOKEN

SPIECE_UNDERLINE = "\u2581"
# A Unicode noncharacter (reserved for a program's internal use, never in real text): placed inside
# a control-token spelling by escape_special_text and removed before a chunk is encoded.
ESCAPE_MARK = "\ufdd0"
# Placeholders a prompt builder places itself, escaped in user text even where the tokenizer does
# not have them as tokens (``<image>`` is replaced by image features, never tokenized).
PROMPT_PLACEHOLDERS = (IMAGE_TOKEN, IMAGE_PATCH_TOKEN, IM_START_TOKEN, IM_END_TOKEN, SEG_TOKEN)
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def load_tokenizer(path, model_max_length: int = 512):
    """Load the (fast) tokenizer of a LISA/LLaVA checkpoint folder, offline.

    The folder needs a ``tokenizer.json`` or a SentencePiece ``tokenizer.model`` (plus the
    ``tokenizer_config.json`` / ``added_tokens.json`` / ``special_tokens_map.json`` LISA ships).
    Padding is on the right; a tokenizer without a pad token pads with ``<unk>`` as LISA does.
    """
    from transformers import AutoTokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"tokenizer folder {str(folder)!r} does not exist")
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer.model").is_file():
        raise FileNotFoundError(
            f"no tokenizer in {str(folder)!r}: expected tokenizer.json or a SentencePiece tokenizer.model"
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), model_max_length=model_max_length,
                                            padding_side="right", local_files_only=True,
                                            **_language_model_config(folder))
    except Exception as exc:  # transformers raises many kinds; name the folder in all of them
        raise ValueError(f"could not load the tokenizer in {str(folder)!r}: {exc}") from exc
    if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
        raise ValueError(f"the tokenizer in {str(folder)!r} did not load as a fast tokenizer")
    tok.padding_side = "right"
    if tok.pad_token is None:
        if tok.unk_token is None:
            raise ValueError(f"the tokenizer in {str(folder)!r} has neither a pad nor an unk token")
        tok.pad_token = tok.unk_token
    return tok


def _language_model_config(folder: Path) -> dict:
    """``{"config": ...}`` for AutoTokenizer when ``config.json`` is a flat LLaVA / LISA config.

    Left to itself, AutoTokenizer parses such a file as transformers' own nested ``LlavaConfig``,
    which fails on fields of the language model (Llama-3 ``rope_scaling`` needs
    ``max_position_embeddings``) and picks the tokenizer class for "llava" instead of for the
    language model. The tokenizer belongs to the language model, so it is chosen by that model's
    type (a default config of that type: only its ``model_type`` matters here)."""
    from transformers import AutoConfig

    from .constants import LLAVA_LLM_TYPES

    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or "text_config" in data:
        return {}  # no config.json, or transformers' own nested layout (llava-hf), which it parses itself
    if data.get("model_type") not in LLAVA_LLM_TYPES:
        return {}
    lisa_block = data.get("lisa") if isinstance(data.get("lisa"), dict) else {}
    llm_type = lisa_block.get("llm_model_type") or LLAVA_LLM_TYPES[data["model_type"]]
    try:
        return {"config": AutoConfig.for_model(llm_type)}
    except (ValueError, KeyError):
        return {}


# --------------------------------------------------------------------------------------------------
# encoding


class _Rules:
    """Per-tokenizer split/strip rules and the chunk encoder, cached on the tokenizer."""

    def __init__(self, tokenizer):
        backend = tokenizer.backend_tokenizer
        self.model = backend.model
        self.bos_id = tokenizer.bos_token_id
        named = {str(t) for t in tokenizer.all_special_tokens}
        flags = {}
        for added in tokenizer.added_tokens_decoder.values():
            content = str(added.content) if hasattr(added, "content") else str(added)
            if content in named:
                flags[content] = (bool(getattr(added, "lstrip", False)), bool(getattr(added, "rstrip", False)))
            else:
                flags[content] = (True, True)  # 4.31: "We strip left and right by default"
        for content in named:
            flags.setdefault(content, (False, False))
        self.flags = flags
        ordered = sorted(flags, key=len, reverse=True)
        self.split_re = re.compile("(" + "|".join(re.escape(t) for t in ordered) + ")") if ordered else None
        controls = sorted(set(flags) | set(PROMPT_PLACEHOLDERS), key=len, reverse=True)
        self.control_re = re.compile("|".join(re.escape(t) for t in controls))
        # the most characters one token stands for: a text of n characters needs >= n / this tokens
        vocab = backend.get_vocab(with_added_tokens=True)
        self.longest_token = max([len(t) for t in vocab] + [1])
        self.ids = {t: tokenizer.convert_tokens_to_ids(t) for t in flags}
        self.sentencepiece_like = _is_sentencepiece_like(backend)
        self.backend = backend
        # BOS as ``tokenizer(text)`` adds it: ask the post-processor rather than trusting add_bos_token.
        with_special = backend.encode("x", add_special_tokens=True).ids
        without = backend.encode("x", add_special_tokens=False).ids
        self.adds_bos = self.bos_id is not None and with_special[:1] == [self.bos_id] != without[:1]

    def encode_chunk(self, text: str) -> list[int]:
        if self.sentencepiece_like:
            text = text.replace(ESCAPE_MARK, "")  # the BPE model alone never matches an added token
            return [t.id for t in self.model.tokenize(SPIECE_UNDERLINE + text.replace(" ", SPIECE_UNDERLINE))]
        if ESCAPE_MARK in text:  # the backend would match added tokens again: encode the marked pieces apart
            return [i for part in text.split(ESCAPE_MARK) if part
                    for i in self.backend.encode(part, add_special_tokens=False).ids]
        return self.backend.encode(text, add_special_tokens=False).ids


def _is_sentencepiece_like(backend) -> bool:
    """A BPE model behind a Metaspace pre-tokenizer or a Replace(" ", "▁") normaliser (LLaMA style)."""
    state = json.loads(backend.to_str())
    if state.get("model", {}).get("type") != "BPE":
        return False
    text = json.dumps([state.get("pre_tokenizer"), state.get("normalizer")], ensure_ascii=False)
    return '"Metaspace"' in text or SPIECE_UNDERLINE in text


def _rules(tokenizer) -> _Rules:
    key = (len(tokenizer), tuple(str(t) for t in tokenizer.all_special_tokens))
    cached = getattr(tokenizer, "_lisa_rules", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    rules = _Rules(tokenizer)
    tokenizer._lisa_rules = (key, rules)
    return rules


def encode(tokenizer, text: str, add_bos: bool = True) -> list[int]:
    """Ids as transformers 4.31's slow LlamaTokenizer gives them (``tokenizer(text).input_ids``)."""
    if not isinstance(text, str):
        raise TypeError(f"encode expects a str, got {type(text).__name__}")
    return _encode(_rules(tokenizer), text, add_bos)


def _encode(rules: _Rules, text: str, add_bos: bool) -> list[int]:
    parts = rules.split_re.split(text) if rules.split_re is not None else [text]
    # re.split with one group alternates text, token, text, ...: odd indices are tokens.
    for i in range(1, len(parts), 2):
        lstrip, rstrip = rules.flags[parts[i]]
        if rstrip and i + 1 < len(parts):
            parts[i + 1] = parts[i + 1].lstrip()
        if lstrip:
            parts[i - 1] = parts[i - 1].rstrip()
    ids: list[int] = []
    if add_bos and rules.adds_bos:
        ids.append(rules.bos_id)
    for i, part in enumerate(parts):
        if not part:
            continue
        if i % 2:
            ids.append(rules.ids[part])
        else:
            ids.extend(rules.encode_chunk(part))
    return ids


def escape_special_text(tokenizer, text: str) -> str:
    """``text`` (a user's or a history message) made safe to put into a prompt: every spelling of a
    control token (the tokenizer's added and special tokens, ``<image>``, ``<im_start>``...) gets an
    :data:`ESCAPE_MARK` after its first character, so :func:`encode` and :func:`tokenizer_image_token`
    read it as ordinary text. Marks already in ``text`` are removed first. Only a prompt builder
    places control tokens."""
    if not isinstance(text, str):
        raise TypeError(f"escape_special_text expects a str, got {type(text).__name__}")
    pattern = _rules(tokenizer).control_re
    text = text.replace(ESCAPE_MARK, "")
    # A mark inside one spelling can leave another one that overlapped it whole: repeat until none.
    while pattern.search(text):
        text = pattern.sub(lambda m: m.group(0)[0] + ESCAPE_MARK + m.group(0)[1:], text)
    return text


def min_token_count(tokenizer, n_chars: int) -> int:
    """A lower bound on the tokens of any text of ``n_chars`` characters (no token stands for more
    characters than the longest one in the vocabulary), so an over-long text can be refused before
    it is tokenized."""
    return -(-int(n_chars) // _rules(tokenizer).longest_token)


def tokenizer_image_token(prompt: str, tokenizer, image_token_index: int = IMAGE_TOKEN_INDEX) -> list[int]:
    """Encode ``prompt`` with every ``<image>`` replaced by ONE ``image_token_index`` id (LLaVA's helper).

    Each ``<image>``-separated chunk is encoded separately with BOS; only the first chunk keeps its BOS.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"tokenizer_image_token expects a str, got {type(prompt).__name__}")
    rules = _rules(tokenizer)
    chunks = [_encode(rules, chunk, True) for chunk in prompt.split(IMAGE_TOKEN)]
    ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == rules.bos_id:
        offset = 1
        ids.append(chunks[0][0])
    for i, chunk in enumerate(chunks):
        if i > 0:
            ids.append(image_token_index)
        ids.extend(chunk[offset:])
    return ids


# --------------------------------------------------------------------------------------------------
# special tokens


def seg_token_id(tokenizer) -> int:
    """Id of ``[SEG]`` (looked up by name; LISA's ``tokenizer("[SEG]").input_ids[0]`` can be wrong)."""
    if SEG_TOKEN not in tokenizer.get_vocab():
        raise ValueError(
            f"the tokenizer has no {SEG_TOKEN} token (vocab size {len(tokenizer)}): use a LISA checkpoint's "
            "tokenizer or call lisa.tokenization.add_lisa_tokens first"
        )
    return int(tokenizer.convert_tokens_to_ids(SEG_TOKEN))


def add_lisa_tokens(tokenizer, use_mm_start_end: bool = True) -> int:
    """Add ``[SEG]`` (normal) then ``<im_start>``/``<im_end>`` (special) as LISA training does.

    Tokens already present keep their ids, so this is a no-op on a LISA checkpoint's tokenizer.
    Returns the ``[SEG]`` id. Remember ``model.resize_token_embeddings(len(tokenizer))``.
    """
    vocab = tokenizer.get_vocab()
    if SEG_TOKEN not in vocab:
        tokenizer.add_tokens(SEG_TOKEN)
    if use_mm_start_end:
        missing = [t for t in (IM_START_TOKEN, IM_END_TOKEN) if t not in vocab]
        if missing:
            tokenizer.add_tokens(missing, special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    return seg_token_id(tokenizer)


# --------------------------------------------------------------------------------------------------
# decoding


def _utf8_with_replacement(data: bytes) -> str:
    """UTF-8 decode where every byte that does not start a valid character becomes U+FFFD.

    SentencePiece replaces per byte; Python's "replace" would merge a truncated sequence into one.
    """
    out, i = [], 0
    while i < len(data):
        b = data[i]
        n = 1 if b < 0x80 else 2 if 0xC2 <= b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else 4 if 0xF0 <= b < 0xF5 else 0
        if n:
            try:
                out.append(data[i:i + n].decode("utf-8"))
                i += n
                continue
            except UnicodeDecodeError:
                pass
        out.append("\ufffd")
        i += 1
    return "".join(out)


def _sp_decode(pieces: list[str]) -> str:
    """SentencePiece ``decode`` of pieces: bytes fused, "▁" -> " ", one leading dummy space dropped."""
    out: list[str] = []
    pending = bytearray()
    for i, piece in enumerate(pieces):
        m = _BYTE_PIECE.match(piece)
        if m:
            pending.append(int(m.group(1), 16))
            continue
        if pending:
            out.append(_utf8_with_replacement(bytes(pending)))
            pending.clear()
        if i == 0 and piece.startswith(SPIECE_UNDERLINE):
            piece = piece[1:]
        out.append(piece.replace(SPIECE_UNDERLINE, " "))
    if pending:
        out.append(_utf8_with_replacement(bytes(pending)))
    return "".join(out)


def _tokens_to_string(tokens: list[str], specials: set[str]) -> str:
    # 4.31 LlamaTokenizer.convert_tokens_to_string: specials verbatim, a space before a special that
    # follows ordinary text (not at position 0), SentencePiece decoding for the runs in between.
    out, run, prev_special = "", [], False
    for i, token in enumerate(tokens):
        if token in specials:
            if not prev_special and i != 0:
                out += " "
            out += _sp_decode(run) + token
            prev_special, run = True, []
        else:
            run.append(token)
            prev_special = False
    return out + _sp_decode(run)


def _decoded_parts(tokenizer, ids) -> list[tuple[str, bool]]:
    """``ids`` as (text, is_added_token) parts: each added token alone, the runs between decoded."""
    ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
    ids = [i for i in ids if i >= 0]
    size = len(tokenizer)
    bad = [i for i in ids if i >= size]
    if bad:
        raise ValueError(f"token id {bad[0]} is out of range for a tokenizer of {size} tokens")
    base_size = tokenizer.backend_tokenizer.get_vocab_size(with_added_tokens=False)
    specials = {str(t) for t in tokenizer.all_special_tokens}
    tokens = tokenizer.convert_ids_to_tokens(ids)
    parts, run = [], []
    for tid, token in zip(ids, tokens):
        if tid >= base_size:  # 4.31 added_tokens_encoder: tokens appended after the SentencePiece vocab
            if run:
                parts.append((_tokens_to_string(run, specials), False))
                run = []
            parts.append((token, True))
        else:
            run.append(token)
    if run:
        parts.append((_tokens_to_string(run, specials), False))
    return parts


def decode(tokenizer, ids) -> str:
    """Text of ``ids`` as 4.31's ``tokenizer.decode(ids, skip_special_tokens=False)`` gives it.

    Negative ids (``IMAGE_TOKEN_INDEX``, ``IGNORE_INDEX``) are dropped. Added tokens (``[SEG]``...)
    are joined to the surrounding text with single spaces, e.g. ``"<s> It is [SEG] ."``.
    """
    return " ".join(text for text, _ in _decoded_parts(tokenizer, ids))


# Punctuation that is written against the word before it / after it.
_CLOSING = tuple(".,;:!?)]}%")
_OPENING = tuple("([{")


def decode_answer(tokenizer, ids) -> str:
    """An answer's text for people: :func:`decode`, except that an added token and the punctuation
    next to it are not split by a space: ``"Sure, [SEG]."`` where :func:`decode` gives
    ``"Sure, [SEG] ."``. Encoding strips the whitespace around added tokens and starts the next
    chunk with SentencePiece's dummy ``"▁"``, so that space is an artefact of the join, not of the
    answer; the ids themselves are unchanged."""
    out = ""
    prev_added = False
    for i, (text, added) in enumerate(_decoded_parts(tokenizer, ids)):
        if i == 0:
            out = text
        elif not added and prev_added and text.lstrip(" ").startswith(_CLOSING):
            out += text.lstrip(" ")
        elif added and not prev_added and out.endswith(_OPENING):
            out += text
        else:
            out += " " + text
        prev_added = added
    return out


# --------------------------------------------------------------------------------------------------
# tiny LLaMA-style tokenizers for tests and demo checkpoints

_SPECIALS = ("<unk>", "<s>", "</s>")


def train_llama_style_tokenizer(texts, vocab_size: int, out_dir, model_max_length: int = 512):
    """Train a small LLaMA-layout BPE tokenizer on ``texts`` and save it as an HF tokenizer folder.

    Layout as in LLaMA: ``<unk>``=0, ``<s>``=1, ``</s>``=2, the 256 byte-fallback pieces ``<0x00>``..
    ``<0xFF>`` = 3..258, then the learned pieces; "▁" marks a word start (SentencePiece dummy prefix);
    BOS is added by the post-processor. Deterministic for the same texts. Returns the tokenizer as
    :func:`load_tokenizer` loads it from ``out_dir``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in texts if isinstance(t, str) and t]
    if not texts:
        raise ValueError("train_llama_style_tokenizer needs at least one non-empty text")
    n_fixed = len(_SPECIALS) + 256
    if vocab_size <= n_fixed:
        raise ValueError(f"vocab_size must be larger than {n_fixed} (3 special + 256 byte tokens), got {vocab_size}")
    budget = vocab_size - n_fixed

    counter = Tokenizer(models.BPE())
    # Punctuation is kept out of the merges ("red?" encodes as "▁red" "?", as LLaMA's vocabulary does),
    # so a word is one token whatever follows it.
    counter.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="always", split=True),
        pre_tokenizers.Punctuation("isolated")])
    trainer = trainers.BpeTrainer(vocab_size=budget, limit_alphabet=budget, show_progress=False,
                                  special_tokens=[])
    counter.train_from_iterator(texts, trainer)
    learned = json.loads(counter.to_str())["model"]

    vocab = {tok: i for i, tok in enumerate(_SPECIALS)}
    vocab.update({f"<0x{b:02X}>": len(_SPECIALS) + b for b in range(256)})
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme="always",
                                                 split=False)
    tok.decoder = decoders.Sequence([decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _SPECIALS])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<unk>", padding_side="right", model_max_length=model_max_length)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return load_tokenizer(out, model_max_length=model_max_length)
