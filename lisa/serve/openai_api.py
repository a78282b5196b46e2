"""OpenAI-compatible routes: ``GET /v1/models`` and ``POST /v1/chat/completions``.

A chat completion takes ``messages`` whose content is a string or a list of ``{"type": "text"}`` and
``{"type": "image_url", "image_url": {"url": ...}}`` parts. The conversation has exactly one image,
in its first user message (the model's prompt puts the image there), given as a ``data:`` URL or,
when the server was started with ``--image_dir DIR``, as a path (or ``file://`` URL) inside DIR;
remote URLs are not fetched. ``model``, ``max_tokens`` (or ``max_completion_tokens``; more than the server's
``--max_new_tokens`` is cut to it),
``temperature`` (omitted or 0: greedy), ``top_p``, ``seed``, ``stop`` and ``stream`` are honoured.
With ``stream: true`` the answer comes as server-sent ``chat.completion.chunk`` events ending with
``data: [DONE]``. The masks of the answer's ``[SEG]`` tokens come as ``masks`` (COCO RLE with area
and bbox, at the image's size) beside ``message`` in the choice, or in the final chunk's choice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..inference.request import GenerationRequest, Sampling
from .inputs import ApiError, check_max_new_tokens, decode_base64, history_from_messages, image_upload
from .masks import describe_mask


def sse(obj, event: str | None = None) -> str:
    """One server-sent event (``obj`` as JSON, or a literal string such as ``[DONE]``)."""
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {data}\n\n"


class ImageURL(BaseModel):
    url: str


class Part(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Part]


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields (user, metadata, ...) we do not use
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")


def read_image_url(url: str, settings) -> bytes:
    """The bytes of a ``data:`` URL, or of a file inside the server's ``image_dir``."""
    if url.startswith("data:"):
        return decode_base64(url, "image_url")
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https", "ftp"):
        raise ApiError(422, "invalid_field", "image_url: remote URLs are not fetched; send the image as a data: URL")
    if not settings.image_dir:
        raise ApiError(422, "invalid_field", "image_url: this server reads no local files (start it with "
                                             "--image_dir DIR); send the image as a data: URL")
    path = Path(unquote(urlparse(url).path) if scheme == "file" else url)
    root = Path(settings.image_dir).resolve()
    target = (root / path).resolve() if not path.is_absolute() else path.resolve()
    if not target.is_relative_to(root):
        raise ApiError(403, "forbidden_path", f"image_url: {url!r} is outside the folder this server may read")
    if not target.is_file():
        raise ApiError(422, "invalid_field", f"image_url: no file {url!r} in the server's image folder")
    if target.stat().st_size > settings.max_body_bytes:
        raise ApiError(413, "image_too_large", f"image_url: {url!r} is larger than {settings.max_body_bytes} bytes")
    return target.read_bytes()


def parse_messages(messages: list[ChatMessage], settings) -> tuple[str, list[tuple[str, str]], str]:
    """-> (the image URL, earlier (user, answer) turns, the user message to answer)."""
    if messages[0].role in ("system", "developer"):
        raise ApiError(422, "invalid_field", "messages[0]: system messages are not supported; the model's "
                                             "conversation template has its own system prompt")
    images, plain = [], []
    for i, m in enumerate(messages):
        if m.role in ("system", "developer"):
            raise ApiError(422, "invalid_field", f"messages[{i}]: a system message can only come first")
        parts = [Part(type="text", text=m.content)] if isinstance(m.content, str) else m.content
        texts = []
        for j, part in enumerate(parts):
            if part.type == "image_url":
                if m.role != "user" or part.image_url is None:
                    raise ApiError(422, "invalid_field", f"messages[{i}].content[{j}]: an image_url part needs "
                                                         "image_url.url and belongs to a user message")
                images.append((i, part.image_url.url))
            elif part.text:
                texts.append(part.text)
        plain.append({"role": m.role, "content": "\n".join(texts)})
    if len(images) != 1 or images[0][0] != 0:
        raise ApiError(422, "invalid_field", f"the conversation needs exactly one image, in its first user message "
                                             f"(got {len(images)} image(s))")
    history, prompt = history_from_messages(plain, settings.max_prompt_chars)
    return images[0][1], history, prompt


def _usage(answer) -> dict:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.tokens,
            "total_tokens": answer.prompt_tokens + answer.tokens}


def add_openai_routes(app: FastAPI, ctx) -> None:
    settings = ctx.settings

    @app.get("/v1/models", dependencies=[Depends(ctx.require_key)])
    async def list_models():
        """The served models, as OpenAI's model list."""
        now = int(time.time())
        return {"object": "list", "data": [{"id": name, "object": "model", "created": now, "owned_by": "lisa"}
                                           for name in ctx.names]}

    @app.post("/v1/chat/completions", dependencies=[Depends(ctx.require_key)])
    async def chat_completions(request: Request):
        """An OpenAI chat completion about one image; masks beside the message (``stream`` for SSE)."""
        rid = request.state.request_id
        try:
            body = ChatCompletionRequest.model_validate_json(await request.body())
        except ValidationError as e:
            details = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
            raise ApiError(422, "invalid_field", details) from None
        backend = ctx.backend(body.model)
        url, history, prompt = parse_messages(body.messages, settings)
        # more than the server allows is cut to its limit (clients often send a large default)
        asked = body.max_completion_tokens or body.max_tokens
        max_new = check_max_new_tokens(min(asked, settings.max_new_tokens) if asked else None, settings.max_new_tokens)
        await run_in_threadpool(ctx.admit, backend, prompt, history, max_new or settings.max_new_tokens)
        data = await run_in_threadpool(read_image_url, url, settings)
        image = await run_in_threadpool(image_upload, data, settings.max_pixels, "image_url")  # decoded by the worker
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        job = GenerationRequest(image, prompt, history, max_new_tokens=max_new or settings.max_new_tokens,
                                sampling=Sampling(body.temperature, body.top_p, body.seed), stop=stop)
        base = {"id": f"chatcmpl-{rid}", "created": int(time.time()), "model": backend.name}
        describe = lambda answer: [describe_mask(m, "rle") for m in answer.masks]  # noqa: E731
        if not body.stream:
            answer = await ctx.generate(backend, job, rid)
            masks = await run_in_threadpool(describe, answer)
            out = {**base, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": answer.text},
                "finish_reason": answer.finish_reason, "masks": masks}], "usage": _usage(answer)}
            return JSONResponse(out, headers={"x-lisa-replica": answer.replica} if answer.replica else None)

        events = await ctx.stream(backend, job, rid)
        base = {**base, "object": "chat.completion.chunk"}
        with_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def chunks():
            yield sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                            "finish_reason": None}]})
            async for event in events:
                if "text" in event:
                    yield sse({**base, "choices": [{"index": 0, "delta": {"content": event["text"]},
                                                    "finish_reason": None}]})
                elif "answer" in event:
                    answer = event["answer"]
                    masks = await run_in_threadpool(describe, answer)
                    yield sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": answer.finish_reason,
                                                    "masks": masks}]})
                    if with_usage:
                        yield sse({**base, "choices": [], "usage": _usage(answer)})
                else:
                    err = event["error"]
                    yield sse({"error": {"code": err.code, "message": err.message, "request_id": rid}})
            yield sse("[DONE]")

        return StreamingResponse(chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
