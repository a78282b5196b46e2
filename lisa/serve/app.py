"""The FastAPI application: ``create_app(models, settings)``, the one app of every way to serve.

``models`` is a pipeline, or a dict from model name to pipeline or backend: pipelines run in this
process (``LocalBackend``); under Ray Serve the same app gets ``RayBackend``s that reach the model
replicas. Routes: ``POST /v1/segment``, ``POST /v1/chat`` (``?stream=true`` for server-sent events),
``GET /v1/model``, ``GET /health``, FastAPI's ``/openapi.json``, the OpenAI-compatible routes
(``openai_api``) and LLaVA's controller/worker protocol (``llava_protocol``). Every error is
``{"error": {"code", "message", "request_id"}}`` with a 4xx status for bad input, 503 +
``Retry-After`` when the model is busy and 500 (no traceback) for model errors.

A request is checked in order of cost: the API key (headers, before the body is read; see
:mod:`lisa.serve.middleware`), the body size, the fields, the context length (prompt + history +
image features + answer budget, from the tokens alone), the image header (pixel count), then queue
admission. Only the model worker decodes pixels, when the request's turn comes.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..inference.request import MAX_PROMPT_CHARS, GenerationRequest
from .backend import LocalBackend
from .context import ServeContext
from .inputs import ApiError, check_max_new_tokens, check_prompt, decode_base64, history_from_messages, image_upload
from .llava_protocol import add_llava_routes
from .masks import describe_mask
from .middleware import RequestLimits
from .openai_api import add_openai_routes, sse
from .schemas import ChatJSON, ErrorResponse, Health, ModelInfo, SegmentJSON, SegmentResponse

log = logging.getLogger("lisa.serve")
MaskFormat = Literal["rle", "png"]


@dataclass
class ServeSettings:
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_prompt_chars: int = MAX_PROMPT_CHARS
    max_new_tokens: int = 512  # the cap for a per-request max_new_tokens, and the default
    max_queue: int = 16
    max_batch: int = 4
    batch_wait_ms: float = 0.0  # after the first request of a turn, wait this long for more to batch
    decode_together: bool = True  # a turn's requests share one batched generation
    retry_after_s: int = 1
    body_timeout_s: float = 30.0  # a body not fully received by then gets 408
    api_key: str | None = None
    version: str = ""
    image_dir: str | None = None  # local image paths in OpenAI requests must lie in this folder

    def __post_init__(self):
        if not 1 <= self.max_prompt_chars <= MAX_PROMPT_CHARS:
            raise ValueError(f"max_prompt_chars must be between 1 and {MAX_PROMPT_CHARS}, not {self.max_prompt_chars}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, not {self.max_new_tokens}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, not {self.batch_wait_ms}")


ERRORS = {status: {"model": ErrorResponse, "description": text} for status, text in [
    (400, "the image or body cannot be decoded"), (401, "missing or wrong API key"),
    (404, "no model of that name"), (408, "the body did not arrive in time"), (413, "body or image too large"),
    (415, "unsupported media type"),
    (422, "invalid field (empty or over-long prompt, conversation over the context length, bad messages, ...)"),
    (500, "model error; quote the request id"),
    (503, "model busy (queue full, out of memory, no replica); retry after Retry-After seconds")]}


def _body_doc(json_model, form_fields: dict) -> dict:
    form = {"type": "object", "required": ["image"],
            "properties": {"image": {"type": "string", "format": "binary"}, "max_new_tokens": {"type": "integer"},
                           **{k: {"type": "string", "description": v} for k, v in form_fields.items()}}}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{json_model.__name__}"}},
        "multipart/form-data": {"schema": form}}}}


def _error_response(request: Request, status: int, code: str, message: str, headers=None) -> JSONResponse:
    rid = getattr(request.state, "request_id", "")
    return JSONResponse({"error": {"code": code, "message": message, "request_id": rid}}, status, headers=headers)


def _validation_message(err: ValidationError | RequestValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query"))
        parts.append(f"{loc or 'body'}: {e.get('msg')}")
    return "; ".join(parts)


def loads(text, what: str = "the body"):
    """``json.loads`` whose every failure is a 400 (also a number of more than 4300 digits and JSON
    nested deeper than the interpreter recurses)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ApiError(400, "invalid_json", f"{what} nests JSON too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, and a too long integer
        raise ApiError(400, "invalid_json", f"{what} is not valid JSON ({e})") from None


def _parse_json(body: bytes, json_model) -> dict:
    raw = loads(body)
    try:
        parsed = json_model.model_validate(raw)
    except ValidationError as e:
        raise ApiError(422, "invalid_field", _validation_message(e)) from None
    fields = parsed.model_dump()
    fields["image"] = decode_base64(fields["image"])
    return fields


async def _read_fields(request: Request, json_model) -> dict:
    """JSON or multipart body -> {"image": bytes, "prompt"|"messages": ..., "max_new_tokens": ...}."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json":
        return await run_in_threadpool(_parse_json, await request.body(), json_model)  # up to MBs of base64
    if media == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=8)
        except Exception as e:  # noqa: BLE001 - starlette raises several kinds for a broken multipart body
            raise ApiError(400, "invalid_multipart", f"the multipart body cannot be parsed ({e})") from None
        try:
            image = form.get("image")
            if image is None:
                raise ApiError(422, "missing_field", "'image' is required (a file field)")
            data = await image.read() if isinstance(image, UploadFile) else decode_base64(image)
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            fields["image"] = data
        finally:
            await form.close()
        if json_model is ChatJSON:
            try:
                fields["messages"] = loads(fields.get("messages", ""), "'messages'")
            except ApiError as e:
                raise ApiError(422, "invalid_field", f"'messages' must be a JSON list of {{role, content}}: "
                                                     f"{e.message}") from None
        return fields
    shown = media or "none"
    raise ApiError(415, "unsupported_media_type",
                   f"Content-Type {shown!r} is not supported; send application/json or multipart/form-data")


def as_backends(models, settings: ServeSettings) -> dict:
    """A pipeline, or a dict of pipelines and backends -> ``{name: backend}``."""
    if not isinstance(models, dict):
        models = {"lisa": models}
    return {name: m if hasattr(m, "generate") and hasattr(m, "stream") else LocalBackend(name, m, settings)
            for name, m in models.items()}


def answer_json(answer, mask_format: str, image, t_dec: float, t0: float, request_id: str) -> dict:
    t_enc = time.perf_counter()
    masks = [describe_mask(m, mask_format) for m in answer.masks]
    t_enc = time.perf_counter() - t_enc
    rt = answer.timings
    timings = {"queue_wait": answer.queue_wait, "image_decode": t_dec,
               **{k: rt[k] for k in ("vision_tower", "sam_encoder", "prefill", "decode", "tokens", "mask_decode")},
               "model": rt["total"], "encode_masks": t_enc, "total": time.perf_counter() - t0}
    return {"request_id": request_id, "text": answer.text, "masks": masks, "mask_format": mask_format,
            "masks_dropped": int(getattr(answer, "masks_dropped", 0)),
            "image_size": [int(image.shape[0]), int(image.shape[1])], "cache_hit": answer.cache_hit,
            "timings": timings, "batch": {"size": answer.batch_size, "index": answer.batch_index},
            "model": answer.model, "replica": answer.replica, "finish_reason": answer.finish_reason}


def create_app(models, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    ctx = ServeContext(as_backends(models, settings), settings)

    @asynccontextmanager
    async def lifespan(app):
        for backend in ctx.backends.values():
            getattr(backend, "start", lambda: None)()
        yield
        for backend in ctx.backends.values():
            getattr(backend, "stop", lambda: None)()

    app = FastAPI(title="LISA segmentation API", version="1", lifespan=lifespan,
                  description="Reasoning segmentation: an image and an instruction in, the answer and its masks out.")
    first = next(iter(ctx.backends.values()))
    app.state.ctx, app.state.settings = ctx, settings
    app.state.worker, app.state.pipe = getattr(first, "worker", None), getattr(first, "pipe", None)
    # (it also answers anything unexpected with a JSON 500 that keeps the connection usable)
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes, api_key=settings.api_key,
                       body_timeout_s=settings.body_timeout_s)

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError):
        return _error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError):
        return _error_response(request, 422, "invalid_field", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException):
        return _error_response(request, exc.status_code, "http_error", str(exc.detail), getattr(exc, "headers", None))

    require_key = ctx.require_key

    async def answer(request: Request, fields: dict, prompt: str, history, mask_format: str, t0: float,
                     stream: bool):
        backend = ctx.backend(fields.get("model"))
        max_new = check_max_new_tokens(fields.get("max_new_tokens"), settings.max_new_tokens)
        if max_new is None:
            max_new = settings.max_new_tokens
        await run_in_threadpool(ctx.admit, backend, prompt, history, max_new)
        # the header only: the pixel count is known without decoding; the model worker decodes
        image = await run_in_threadpool(image_upload, fields.pop("image"), settings.max_pixels)
        rid = request.state.request_id
        job = GenerationRequest(image, prompt, history, max_new_tokens=max_new)
        if not stream:
            result = await ctx.generate(backend, job, rid)
            t_dec = image.decode_seconds
            body = await run_in_threadpool(answer_json, result, mask_format, image, t_dec, t0, rid)
            return JSONResponse(body, headers={"x-lisa-replica": result.replica} if result.replica else None)
        events = await ctx.stream(backend, job, rid)

        async def body():
            async for event in events:
                if "text" in event:
                    yield sse({"text": event["text"]}, "text")
                elif "answer" in event:
                    yield sse(await run_in_threadpool(answer_json, event["answer"], mask_format, image,
                                                      image.decode_seconds, t0, rid), "answer")
                else:
                    err = event["error"]
                    yield sse({"error": {"code": err.code, "message": err.message, "request_id": rid}}, "error")

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    mask_query = Query("rle", description="rle: COCO compressed RLE; png: base64 PNG per mask")
    stream_query = Query(False, description="answer as server-sent events: `text` pieces, then the `answer`")

    @app.post("/v1/segment", response_model=SegmentResponse, responses=ERRORS, dependencies=[Depends(require_key)],
              openapi_extra=_body_doc(SegmentJSON, {"prompt": "the instruction", "model": "model name"}))
    async def segment(request: Request, mask_format: MaskFormat = mask_query, stream: bool = stream_query):
        """Segment what the prompt asks for in the image (multipart ``image`` + ``prompt``, or JSON)."""
        t0 = time.perf_counter()
        fields = await _read_fields(request, SegmentJSON)
        prompt = check_prompt(fields.get("prompt"), settings.max_prompt_chars)
        return await answer(request, fields, prompt, None, mask_format, t0, stream)

    @app.post("/v1/chat", response_model=SegmentResponse, responses=ERRORS, dependencies=[Depends(require_key)],
              openapi_extra=_body_doc(ChatJSON, {"messages": "JSON list of {role, content}", "model": "model name"}))
    async def chat(request: Request, mask_format: MaskFormat = mask_query, stream: bool = stream_query):
        """Answer the last user message of a conversation about one image (the image encoding is cached)."""
        t0 = time.perf_counter()
        fields = await _read_fields(request, ChatJSON)
        history, prompt = history_from_messages(fields.get("messages"), settings.max_prompt_chars)
        return await answer(request, fields, prompt, history, mask_format, t0, stream)

    @app.get("/health", response_model=Health)
    async def health():
        """``ok`` when every model can answer (503 and ``degraded`` otherwise), with each model's state."""
        models = {name: await backend.health() for name, backend in ctx.backends.items()}
        ok = all(m.get("status") == "ok" for m in models.values())
        total = {k: sum(int(m.get(k) or 0) for m in models.values())
                 for k in ("queue_depth", "max_queue", "served", "failed")}
        return JSONResponse({"status": "ok" if ok else "degraded", **total, "models": models}, 200 if ok else 503)

    @app.get("/v1/model", response_model=ModelInfo, responses={401: ERRORS[401], 404: ERRORS[404]},
             dependencies=[Depends(require_key)])
    async def model_info(model: str | None = None):
        """What is loaded (of ``model``, or the first model), its limits, cache and batching counters."""
        return await ctx.backend(model).info()

    add_openai_routes(app, ctx)
    add_llava_routes(app, ctx)

    default_openapi = app.openapi

    def openapi():
        schema = default_openapi()
        for model in (SegmentJSON, ChatJSON):  # bodies parsed by hand, so FastAPI does not list them
            extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schema["components"]["schemas"].update(extra.pop("$defs", {}))
            schema["components"]["schemas"][model.__name__] = extra
        return schema

    app.openapi = openapi
    return app
