"""The FastAPI application: ``create_app(pipe, settings)``.

Routes: ``POST /v1/segment``, ``POST /v1/chat``, ``GET /v1/model``, ``GET /health`` (and FastAPI's
``/openapi.json``). Every error is ``{"error": {"code", "message", "request_id"}}`` with a 4xx status
for bad input, 503 + ``Retry-After`` when the queue is full and 500 (no traceback) for model errors.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..inference.pipeline import MAX_PROMPT_CHARS, PromptError
from .inputs import ApiError, check_max_new_tokens, check_prompt, decode_base64, decode_image, history_from_messages
from .masks import describe_mask
from .middleware import RequestLimits
from .queue import ModelWorker, QueueFull
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
    retry_after_s: int = 1
    api_key: str | None = None
    version: str = ""

    def __post_init__(self):
        if not 1 <= self.max_prompt_chars <= MAX_PROMPT_CHARS:
            raise ValueError(f"max_prompt_chars must be between 1 and {MAX_PROMPT_CHARS}, not {self.max_prompt_chars}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, not {self.max_new_tokens}")


ERRORS = {status: {"model": ErrorResponse, "description": text} for status, text in [
    (400, "the image or body cannot be decoded"), (401, "missing or wrong API key"),
    (413, "body or image too large"), (415, "unsupported media type"),
    (422, "invalid field (empty or over-long prompt, bad messages, ...)"),
    (500, "model error; quote the request id"), (503, "queue full; retry after Retry-After seconds")]}


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


def _parse_json(body: bytes, json_model) -> dict:
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON ({e})") from None
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
                fields["messages"] = json.loads(fields.get("messages", ""))
            except json.JSONDecodeError:
                raise ApiError(422, "invalid_field", "'messages' must be a JSON list of {role, content}") from None
        return fields
    shown = media or "none"
    raise ApiError(415, "unsupported_media_type",
                   f"Content-Type {shown!r} is not supported; send application/json or multipart/form-data")


def create_app(pipe, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    worker = ModelWorker(pipe, settings.max_queue, settings.max_batch)

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        yield
        worker.stop()

    app = FastAPI(title="LISA segmentation API", version="1", lifespan=lifespan,
                  description="Reasoning segmentation: an image and an instruction in, the answer and its masks out.")
    app.state.worker, app.state.settings, app.state.pipe = worker, settings, pipe
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError):
        return _error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError):
        return _error_response(request, 422, "invalid_field", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException):
        return _error_response(request, exc.status_code, "http_error", str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception):
        rid = getattr(request.state, "request_id", "")
        log.error("request %s failed", rid, exc_info=exc)
        return JSONResponse({"error": {"code": "internal_error", "message": "internal server error",
                                       "request_id": rid}}, 500, headers={"x-request-id": rid})

    def require_key(request: Request):
        if settings.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not given or not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(401, "unauthorized", "a valid API key is required (Authorization: Bearer <key> "
                                                "or X-API-Key: <key>)", {"WWW-Authenticate": "Bearer"})

    async def answer(request: Request, fields: dict, prompt: str, history, mask_format: str, t0: float):
        max_new = check_max_new_tokens(fields.get("max_new_tokens"), settings.max_new_tokens)
        if max_new is None:
            max_new = settings.max_new_tokens
        t_dec = time.perf_counter()
        image = await run_in_threadpool(decode_image, fields["image"], settings.max_pixels)
        t_dec = time.perf_counter() - t_dec
        rid = request.state.request_id
        try:
            job = await worker.run(image, prompt, history, max_new, rid)
        except QueueFull as e:
            wait = max(settings.retry_after_s, math.ceil(worker.depth * worker.seconds_per_request))
            raise ApiError(503, "queue_full", f"{e}; retry in about {wait} s", {"Retry-After": str(wait)}) from None
        except PromptError as e:  # the pipeline's own input checks (e.g. context length)
            raise ApiError(422, "invalid_prompt", str(e)) from None
        except Exception:  # noqa: BLE001 - logged with its traceback by the worker
            raise ApiError(500, "model_error", f"the model failed on this request (request id {rid})") from None
        result = job.result
        t_enc = time.perf_counter()
        new_masks = result.masks
        masks = await run_in_threadpool(lambda: [describe_mask(m, mask_format) for m in new_masks])
        t_enc = time.perf_counter() - t_enc
        rt = result.timings
        timings = {"queue_wait": job.queue_wait, "image_decode": t_dec,
                   **{k: rt[k] for k in ("vision_tower", "sam_encoder", "prefill", "decode", "tokens", "mask_decode")},
                   "model": rt["total"], "encode_masks": t_enc, "total": time.perf_counter() - t0}
        return {"request_id": rid, "text": result.text, "masks": masks, "mask_format": mask_format,
                "image_size": [int(image.shape[0]), int(image.shape[1])], "cache_hit": result.cache_hit,
                "timings": timings, "batch": {"size": job.batch_size, "index": job.batch_index}}

    mask_query = Query("rle", description="rle: COCO compressed RLE; png: base64 PNG per mask")

    @app.post("/v1/segment", response_model=SegmentResponse, responses=ERRORS, dependencies=[Depends(require_key)],
              openapi_extra=_body_doc(SegmentJSON, {"prompt": "the instruction"}))
    async def segment(request: Request, mask_format: MaskFormat = mask_query):
        """Segment what the prompt asks for in the image (multipart ``image`` + ``prompt``, or JSON)."""
        t0 = time.perf_counter()
        fields = await _read_fields(request, SegmentJSON)
        prompt = check_prompt(fields.get("prompt"), settings.max_prompt_chars)
        return await answer(request, fields, prompt, None, mask_format, t0)

    @app.post("/v1/chat", response_model=SegmentResponse, responses=ERRORS, dependencies=[Depends(require_key)],
              openapi_extra=_body_doc(ChatJSON, {"messages": "JSON list of {role, content}"}))
    async def chat(request: Request, mask_format: MaskFormat = mask_query):
        """Answer the last user message of a conversation about one image (the image encoding is cached)."""
        t0 = time.perf_counter()
        fields = await _read_fields(request, ChatJSON)
        history, prompt = history_from_messages(fields.get("messages"), settings.max_prompt_chars)
        return await answer(request, fields, prompt, history, mask_format, t0)

    @app.get("/health", response_model=Health)
    async def health():
        return {"status": "ok", "queue_depth": worker.depth, "max_queue": worker.max_queue,
                "served": worker.served, "failed": worker.failed}

    @app.get("/v1/model", response_model=ModelInfo, responses={401: ERRORS[401]}, dependencies=[Depends(require_key)])
    async def model_info():
        return describe_model(pipe, settings, worker)

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


def describe_model(pipe, settings: ServeSettings, worker: ModelWorker) -> dict:
    model = pipe.model
    cfg = model.config
    llm_cfg = model.llm.config
    weight = model.llm.get_input_embeddings().weight
    quant = getattr(model, "quantization", None) or getattr(llm_cfg, "quantization_config", None)
    if quant is not None and not isinstance(quant, str):
        quant = getattr(quant, "quant_method", None) or type(quant).__name__
    return {
        "version": settings.version,
        "llm": {k: getattr(llm_cfg, k, None) for k in ("model_type", "hidden_size", "num_hidden_layers",
                                                        "vocab_size", "max_position_embeddings")},
        "has_seg_head": bool(cfg.has_seg_head),
        "clip_image_size": int(cfg.clip_image_size), "sam_image_size": int(cfg.sam_image_size),
        "dtype": str(weight.dtype).replace("torch.", ""), "device": str(weight.device),
        "quantization": None if quant is None else str(quant),
        "conv_type": pipe.conv_type, "max_new_tokens": settings.max_new_tokens,
        "limits": {k: v for k, v in asdict(settings).items()
                   if k in ("max_body_bytes", "max_pixels", "max_prompt_chars", "max_new_tokens")},
        "batching": {"max_queue": worker.max_queue, "max_batch": worker.max_batch, "turns": worker.turns,
                     "largest_batch": worker.largest_batch},
        "cache": {"size": len(pipe.cache), "max_items": pipe.cache.max_items, "hits": pipe.cache.hits,
                  "misses": pipe.cache.misses},
    }
