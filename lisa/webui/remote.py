"""``lisa app --server URL``: the web UI as a client of a running ``lisa serve`` (one process or Ray
Serve) instead of a model of its own.

The model list comes from ``GET /v1/models``; each turn is an OpenAI-style streamed chat completion
(the conversation so far, the image as a data URL in the first message), so the answer grows on the
page as the server generates it and the masks arrive with the last chunk (COCO RLE).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import time

import httpx
import numpy as np
from PIL import Image

from ..images import ImageError
from ..inference.visualize import overlay_all
from .ui import SegmentApp, render_conversation

log = logging.getLogger("lisa.app")


def list_models(url: str, api_key: str | None = None, timeout: float = 30.0) -> list[str]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    r = httpx.get(url.rstrip("/") + "/v1/models", headers=headers, timeout=timeout)
    r.raise_for_status()
    return [m["id"] for m in r.json()["data"]]


def _data_url(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _key(arr: np.ndarray) -> str:
    return hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()


def _rle_mask(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


class RemoteSegmentApp(SegmentApp):
    """``respond`` is a generator: one update per piece of streamed text, the masks at the end."""

    def __init__(self, url: str, models: list[str], api_key: str | None = None, timeout: float = 600.0, **kw):
        super().__init__(None, **kw)
        self.url, self.models, self.timeout = url.rstrip("/"), list(models), timeout
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _messages(self, url: str, history: list[tuple[str, str]], prompt: str) -> list[dict]:
        turns = history + [(prompt, None)]
        out = []
        for i, (user, answer) in enumerate(turns):
            content = user if i else [{"type": "text", "text": user}, {"type": "image_url", "image_url": {"url": url}}]
            out.append({"role": "user", "content": content})
            if answer is not None:
                out.append({"role": "assistant", "content": answer})
        return out

    def respond(self, image, prompt, model, state):
        state = dict(state or {"key": None, "history": [], "model": None})
        history = list(state.get("history") or [])

        def view(answer="", convo=None, timing="", status=None, overlay=None, files=None, new_state=None):
            return (overlay, files, answer, convo if convo is not None else render_conversation(history), timing,
                    status, new_state if new_state is not None else state)

        if image is None:
            yield view(status="⚠️ Upload an image first.")
            return
        problem = self.check_prompt(prompt)
        if problem:
            yield view(status=f"⚠️ {html.escape(problem)}")
            return
        try:
            arr = self.image_array(image)
        except ImageError as e:
            yield view(status=f"⚠️ {html.escape(str(e))}")
            return
        model = model or self.models[0]
        key = _key(arr)
        if key != state.get("key") or model != state.get("model"):
            history = []
        body = {"model": model, "messages": self._messages(_data_url(arr), history, prompt), "stream": True,
                "stream_options": {"include_usage": True}}
        if self.max_new_tokens:
            body["max_tokens"] = self.max_new_tokens
        text, final, usage, t0 = "", None, {}, time.perf_counter()
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", json=body, headers=self.headers,
                              timeout=self.timeout) as r:
                if r.status_code != 200:
                    r.read()
                    yield view(status=f"⚠️ The server answered {r.status_code}: "
                                      f"{html.escape(_error_message(r))}")
                    return
                for line in r.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        yield view(text, status=f"⚠️ {html.escape(chunk['error'].get('message', 'error'))}")
                        return
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices", []):
                        text += choice.get("delta", {}).get("content") or ""
                        if choice.get("finish_reason"):
                            final = choice
                    yield view(text)
        except httpx.HTTPError as e:
            log.warning("the server at %s did not answer: %s", self.url, e)
            yield view(text, status=f"⚠️ The server at {html.escape(self.url)} did not answer ({type(e).__name__}).")
            return
        masks = [_rle_mask(m["rle"]) for m in (final or {}).get("masks", [])]
        history.append((prompt, text))
        new_state = {"key": key, "history": history, "model": model}
        took = time.perf_counter() - t0
        timing = (f"**{html.escape(model)}** · {usage.get('completion_tokens', '?')} tokens streamed in "
                  f"{took * 1000:.0f} ms · {len(masks)} mask(s)")
        status = "" if masks else "No `[SEG]` in the answer, so no mask."
        overlay = overlay_all(arr, masks) if masks else arr
        yield view(text, render_conversation(history), timing, status, overlay, self._mask_files(masks) or None,
                   new_state)

    @staticmethod
    def reset():
        return None, None, "", render_conversation([]), "", "", {"key": None, "history": [], "model": None}


def _error_message(response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
