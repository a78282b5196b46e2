"""Training labels from answer spans: which tokens of a conversation the model learns to produce.

The original masks instructions by counting tokens round by round, which only holds for the
SentencePiece LLaMA tokenizer it was written for (a BOS in front of every encoding, a lone "▁" at
the end of "ASSISTANT: "). That walk is kept for those tokenizers, so their labels stay exactly the
original's (:func:`lisa.data.collate.mask_labels`). For every other tokenizer (byte-level BPE as in
Qwen or Llama-3, no BOS, other special tokens) and for templates the walk does not know, the labels
come from the text instead: the character spans of the answers (each with the marker that ends its
turn, e.g. ``</s>`` or ``<|im_end|>``) are found in the conversation, the conversation is tokenized
with character offsets, and a token is supervised when it covers a character of an answer span.
"""

from __future__ import annotations

from ..constants import IGNORE_INDEX, IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from ..conversation import get_template
from ..tokenization import SPIECE_UNDERLINE, _rules, tokenizer_image_token

Span = tuple[int, int]


def answer_spans(conversation: str, conv_type: str) -> list[Span] | None:
    """Character spans of the supervised parts (answer + end-of-turn marker) of a conversation built
    with template ``conv_type``; None when a round is ambiguous (its text holds the answer prefix
    more than once) or, in templates whose rounds are user + assistant, holds no answer."""
    conv = get_template(conv_type)
    prefix, end = conv.answer_prefix, conv.answer_end
    spans: list[Span] = []
    pos = 0
    while pos < len(conversation):
        stop = conversation.find(end, pos)
        round_end = len(conversation) if stop < 0 else stop + len(end)
        part = conversation[pos:round_end]
        if not part.strip():
            break
        if conv.end_closes_every_turn and prefix not in part:
            pos = round_end  # the system text or a user turn (they end with the same marker)
            continue
        if part.count(prefix) != 1 or (conv.end_closes_every_turn and not part.startswith(prefix)):
            return None
        start = pos + part.index(prefix) + len(prefix)
        if start < round_end:
            spans.append((start, round_end))
        pos = round_end
    return spans or None


def encode_with_offsets(tokenizer, text: str, add_bos: bool = True) -> tuple[list[int], list[Span]]:
    """The ids of :func:`lisa.tokenization.encode` with each token's character span in ``text``
    (BOS and a chunk's dummy "▁": an empty span where they stand)."""
    rules = _rules(tokenizer)
    # (start, chunk) pieces after splitting on added tokens and the strip rules of ``encode``
    pieces: list[list] = []
    pos = 0
    parts = rules.split_re.split(text) if rules.split_re is not None else [text]
    for part in parts:
        pieces.append([pos, part])
        pos += len(part)
    for i in range(1, len(pieces), 2):
        lstrip, rstrip = rules.flags[pieces[i][1]]
        if rstrip and i + 1 < len(pieces):
            after = pieces[i + 1]
            kept = after[1].lstrip()
            after[0] += len(after[1]) - len(kept)
            after[1] = kept
        if lstrip:
            pieces[i - 1][1] = pieces[i - 1][1].rstrip()
    ids: list[int] = []
    offsets: list[Span] = []
    if add_bos and rules.adds_bos:
        ids.append(rules.bos_id)
        offsets.append((0, 0))
    for i, (start, part) in enumerate(pieces):
        if not part:
            continue
        if i % 2:
            ids.append(rules.ids[part])
            offsets.append((start, start + len(part)))
        elif rules.sentencepiece_like:
            # the model reports UTF-8 byte offsets into "▁" + chunk; the dummy "▁" is no character of text
            spm = SPIECE_UNDERLINE + part.replace(" ", SPIECE_UNDERLINE)
            char_of = [c for c, ch in enumerate(spm) for _ in ch.encode("utf-8")]
            for tok in rules.model.tokenize(spm):
                s, e = tok.offsets
                ids.append(tok.id)
                cs, ce = char_of[s], char_of[e - 1] + 1 if e > s else char_of[s]
                offsets.append((start + max(cs - 1, 0), start + max(ce - 1, 0)))
        else:
            enc = rules.backend.encode(part, add_special_tokens=False)
            ids.extend(enc.ids)
            offsets.extend((start + s, start + e) for s, e in enc.offsets)
    return ids, offsets


def image_token_offsets(prompt: str, tokenizer) -> tuple[list[int], list[Span]]:
    """:func:`lisa.tokenization.tokenizer_image_token` with character spans (an image token spans
    its ``<image>``)."""
    chunks = prompt.split(IMAGE_TOKEN)
    ids: list[int] = []
    offsets: list[Span] = []
    pos = 0
    bos = _rules(tokenizer).bos_id
    keep_bos = False
    for i, chunk in enumerate(chunks):
        cids, coffs = encode_with_offsets(tokenizer, chunk, True)
        if i == 0:
            keep_bos = bool(cids) and cids[0] == bos
            ids.extend(cids)
            offsets.extend(coffs)
        else:
            ids.append(IMAGE_TOKEN_INDEX)
            offsets.append((pos - len(IMAGE_TOKEN), pos))
            skip = 1 if keep_bos else 0
            ids.extend(cids[skip:])
            offsets.extend((pos + s, pos + e) for s, e in coffs[skip:])
        pos += len(chunk) + len(IMAGE_TOKEN)
    return ids, offsets


def span_labels(conversation: str, input_ids: list[int], tokenizer, conv_type: str) -> list[int] | None:
    """Labels for one unpadded conversation from its answer spans, or None when they cannot be
    found, or when the offsets' tokenization is not ``input_ids`` (then nothing is supervised)."""
    spans = answer_spans(conversation, conv_type)
    if spans is None:
        return None
    ids, offsets = image_token_offsets(conversation, tokenizer)
    if ids != list(input_ids) or ids != tokenizer_image_token(conversation, tokenizer):
        return None
    labels = [IGNORE_INDEX] * len(ids)
    k = 0
    for i, (s, e) in enumerate(offsets):
        if ids[i] == IMAGE_TOKEN_INDEX:
            continue
        # a token of no character (SentencePiece's dummy "▁" of a chunk) belongs where it stands
        e = max(e, s + 1)
        while k < len(spans) and spans[k][1] <= s:
            k += 1
        if k < len(spans) and spans[k][0] < e:
            labels[i] = ids[i]
    return labels
