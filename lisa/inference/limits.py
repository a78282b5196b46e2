"""What one request may ask of the model, checked before any work is done.

The context is counted exactly as generation will fill it: every text token, ``P`` positions for
each image placeholder actually in the prompt (``P`` = the vision tower's feature count), all
history turns of both roles, plus the tokens to generate. A request that does not fit is refused
with a :class:`PromptError` naming the limit; the commands turn it into their own refusal (CLI
message, 422 in the API, a status line in the web UI).
"""

from __future__ import annotations

from ..constants import IMAGE_TOKEN_INDEX
from .request import MAX_PROMPT_CHARS

__all__ = ["MAX_MASKS", "MAX_PROMPT_CHARS", "PromptError", "check_text", "context_positions", "generation_budget"]

MAX_MASKS = 8  # masks decoded per answer (--max_masks); [SEG]s beyond it are left without a mask


class PromptError(ValueError):
    """A prompt or conversation the model cannot take; ``code`` says which limit (for the API)."""

    def __init__(self, message: str, code: str = "invalid_prompt"):
        super().__init__(message)
        self.code = code


def check_text(text, what: str = "the prompt", max_chars: int | None = None, allow_empty: bool = False) -> str:
    """``text`` if it is a non-empty str of valid Unicode within ``max_chars``; else PromptError."""
    if not isinstance(text, str):
        raise PromptError(f"{what} must be text, not {type(text).__name__}")
    if not allow_empty and not text.strip():
        raise PromptError(f"{what} is empty", "empty_prompt")
    if max_chars is not None and len(text) > max_chars:
        raise PromptError(f"{what} is too long ({len(text)} characters, at most {max_chars})", "prompt_too_long")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate ("\ud800" in JSON) is not text and cannot be tokenized
        bad = text[e.start]
        raise PromptError(f"{what} holds a lone surrogate (U+{ord(bad):04X} at character {e.start}), which is "
                          "not valid Unicode text", "invalid_text") from None
    return text


def context_positions(ids: list[int], image_positions: int) -> int:
    """Positions the language model sees for ``ids``: each image placeholder id becomes
    ``image_positions`` feature vectors."""
    n_images = sum(1 for i in ids if i == IMAGE_TOKEN_INDEX)
    return len(ids) - n_images + n_images * int(image_positions)


def generation_budget(n_positions: int, max_new_tokens: int, max_positions: int) -> int:
    """Tokens that may be generated after ``n_positions`` prompt positions (at most ``max_new_tokens``
    and what the model's ``max_positions`` leave); PromptError when the prompt alone does not fit."""
    room = int(max_positions) - int(n_positions)
    if room < 1:
        raise PromptError(f"the prompt, its history and the image need {n_positions} positions; the model "
                          f"allows {max_positions} (max_position_embeddings), including the answer. Shorten "
                          "the conversation.", "context_too_long")
    return min(int(max_new_tokens), room)
