"""The instruction the LLM reads between the visual tokens and the map queries, as token ids."""

from __future__ import annotations


class ByteTokenizer:
    """UTF-8 bytes shifted past LLaMA's ``<unk>=0 <s>=1 </s>=2``; for LLMs without a vocabulary."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0
    vocab_size = 259

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return ([self.bos_token_id] if add_bos else []) + [b + 3 for b in text.encode("utf-8")]

    def __len__(self) -> int:
        return self.vocab_size


def encode_instruction(tokenizer, text: str) -> list[int]:
    """The instruction's ids with BOS; user text is encoded as plain text (no control tokens)."""
    if isinstance(tokenizer, ByteTokenizer):
        return tokenizer.encode(text)
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids
    bos = tokenizer.bos_token_id
    return ([bos] if bos is not None else []) + list(ids)
