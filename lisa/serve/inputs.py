"""Validation of request inputs; every failure is an ``ApiError`` carrying its HTTP status."""

from __future__ import annotations

import base64
import binascii
import contextlib

import numpy as np

from ..images import EncodedImage, ImageError, ImageTooLarge
from ..inference.limits import PromptError, check_text


class ApiError(Exception):
    """An error answered to the client as ``{"error": {"code", "message", "request_id"}}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def decode_base64(data: str, field: str = "image") -> bytes:
    if not isinstance(data, str) or not data:
        raise ApiError(422, "invalid_field", f"{field!r} must be a non-empty base64 string")
    if data.startswith("data:"):  # data URL: data:image/png;base64,....
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(400, "invalid_base64", f"{field!r} is not valid base64 ({e})") from None


def image_upload(data: bytes, max_pixels: int, field: str = "image") -> EncodedImage:
    """An uploaded image checked from its header (pixel count, format) and kept encoded: the model
    worker decodes it when its turn comes, so a waiting request holds only its compressed bytes."""
    with image_errors():
        return EncodedImage(data, max_pixels, name=repr(field))


@contextlib.contextmanager
def image_errors():
    """ImageError -> 400 ``invalid_image``; ImageTooLarge -> 413 ``image_too_large``."""
    try:
        yield
    except ImageTooLarge as e:
        raise ApiError(413, "image_too_large", str(e)) from None
    except ImageError as e:
        raise ApiError(400, "invalid_image", str(e)) from None


def decode_image(data: bytes, max_pixels: int, field: str = "image") -> np.ndarray:
    """Bytes -> HxWx3 uint8. The pixel count is checked from the header, before any pixel is decoded."""
    upload = image_upload(data, max_pixels, field)
    with image_errors():
        return upload.decode()


def check_prompt(prompt, max_chars: int, field: str = "prompt", allow_empty: bool = False) -> str:
    if prompt is None:
        raise ApiError(422, "missing_field", f"{field!r} is required")
    try:
        return check_text(prompt, repr(field), max_chars, allow_empty=allow_empty)
    except PromptError as e:
        raise ApiError(422, "invalid_field" if e.code == "invalid_prompt" else e.code, str(e)) from None


def check_max_new_tokens(value, cap: int) -> int | None:
    if value is None or value == "":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ApiError(422, "invalid_field", f"'max_new_tokens' must be an integer, not {value!r}") from None
    if not 1 <= n <= cap:
        raise ApiError(422, "invalid_field", f"'max_new_tokens' must be between 1 and {cap}, not {n}")
    return n


def history_from_messages(messages, max_chars: int) -> tuple[list[tuple[str, str]], str]:
    """``[{"role": "user"|"assistant", "content": str}, ...]`` ending with a user turn -> (history, prompt)."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(422, "invalid_field", "'messages' must be a non-empty list of {role, content} objects")
    roles = []
    for i, m in enumerate(messages):
        valid = isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
        if not valid:
            raise ApiError(422, "invalid_field",
                           f"messages[{i}] must be an object with role 'user' or 'assistant' and a string content")
        roles.append(m["role"])
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(messages))]
    if roles != expected or roles[-1] != "user":
        raise ApiError(422, "invalid_field",
                       "'messages' must alternate user, assistant, user, ... and end with a user message")
    for i, m in enumerate(messages):  # assistant turns are text the client sends too: the same limits
        check_prompt(m["content"], max_chars, field=f"messages[{i}].content", allow_empty=m["role"] == "assistant")
    history = [(messages[i]["content"], messages[i + 1]["content"]) for i in range(0, len(messages) - 1, 2)]
    return history, messages[-1]["content"]
