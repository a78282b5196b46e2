"""LLaVA's controller and model-worker protocol at the server's own base URL.

LLaVA serves with a controller (which workers register with, and which tells clients where a model
is) and model workers (which stream answers). Here one server is both: every model it serves is
listed by the controller routes, ``/get_worker_address`` answers this server's own URL, and the
worker routes answer for any of its models, so LLaVA's gradio web server, its CLI test client and
other clients of that protocol work unchanged (``--controller-url`` = this server).

Controller: ``/list_models``, ``/refresh_all_workers``, ``/get_worker_address``, ``/register_worker``
(accepted, nothing to do), ``/receive_heart_beat``. Worker: ``/worker_get_status`` and
``/worker_generate_stream``, which takes LLaVA's parameters (``model``, ``prompt`` formatted by the
client with ``<image>`` placeholders, base64 ``images``, ``temperature``, ``top_p``,
``max_new_tokens``, ``stop``) and answers JSON chunks each ended by a NUL byte, whose ``text`` is the
prompt followed by the answer so far, with ``error_code`` 0; a failure is one chunk with a non-zero
``error_code`` and the cause in ``text`` (bad image, prompt too long, out of memory, busy), never a
stack trace. The prompt is used as the client wrote it, as LLaVA's workers do: the protocol is for
front-ends that format conversations themselves (keep it behind the API key when exposed).
"""

from __future__ import annotations

import json

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from ..constants import IMAGE_TOKEN
from ..inference.request import GenerationRequest, Sampling
from .inputs import ApiError, decode_base64, image_upload

# error_code values in the chunks (LLaVA's own clients only test for non-zero)
ERROR_CODES = {"invalid_image": 2, "invalid_base64": 2, "image_too_large": 2, "invalid_prompt": 3,
               "prompt_too_long": 3, "invalid_field": 3, "model_not_found": 4, "queue_full": 5,
               "unavailable": 5, "out_of_memory": 6}


def chunk(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\0"


def error_chunk(err: ApiError) -> bytes:
    return chunk({"text": f"{err.code.replace('_', ' ')}: {err.message}", "error_code": ERROR_CODES.get(err.code, 1)})


async def _json(request: Request) -> dict:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_field", "the body must be a JSON object")
    return data


def _number(params: dict, name: str, default, kind=float, low=None, high=None):
    value = params.get(name, default)
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise ApiError(422, "invalid_field", f"{name!r} must be a number, not {value!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise ApiError(422, "invalid_field", f"{name!r} must be between {low} and {high}, not {value}")
    return value


def worker_request(params: dict, settings) -> tuple[GenerationRequest, str]:
    """LLaVA's worker parameters -> a generation request (and the prompt, the start of every chunk)."""
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(422, "invalid_prompt", "'prompt' must be a non-empty string")
    if len(prompt) > 4 * settings.max_prompt_chars:  # a whole conversation, templates included
        raise ApiError(422, "prompt_too_long", f"'prompt' has {len(prompt)} characters, more than the limit of "
                                               f"{4 * settings.max_prompt_chars}")
    images = params.get("images") or []
    if not isinstance(images, list):
        raise ApiError(422, "invalid_field", "'images' must be a list of base64 images")
    if len(images) != 1 or prompt.count(IMAGE_TOKEN) != 1:
        raise ApiError(422, "invalid_prompt", f"one image and one {IMAGE_TOKEN} in the prompt are needed (got "
                                              f"{len(images)} image(s) and {prompt.count(IMAGE_TOKEN)} placeholder(s))")
    image = image_upload(decode_base64(images[0], "images[0]"), settings.max_pixels, "images[0]")  # worker decodes
    max_new = _number(params, "max_new_tokens", 256, int, 1)
    temperature = _number(params, "temperature", 1.0, float, 0.0, 100.0)
    top_p = _number(params, "top_p", 1.0, float, 1e-6, 1.0)
    stop = params.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(s for s in stop if isinstance(s, str))
    # LLaVA's worker samples above a temperature of 0.001 and decodes greedily below
    sampling = Sampling(temperature if temperature > 0.001 else None, top_p)
    request = GenerationRequest(image, prompt_text=prompt, max_new_tokens=min(max_new, settings.max_new_tokens),
                                sampling=sampling, stop=stop)
    return request, prompt


def add_llava_routes(app: FastAPI, ctx) -> None:
    key = [Depends(ctx.require_key)]

    @app.post("/register_worker", dependencies=key, include_in_schema=False)
    async def register_worker():
        return {}  # the models are this server's own; there are no workers to register

    @app.post("/refresh_all_workers", dependencies=key, include_in_schema=False)
    async def refresh_all_workers():
        return {}

    @app.post("/list_models", dependencies=key, tags=["llava"])
    async def list_models():
        """LLaVA controller: the served model names."""
        return {"models": sorted(ctx.names)}

    @app.post("/get_worker_address", dependencies=key, tags=["llava"])
    async def get_worker_address(request: Request):
        """LLaVA controller: where ``model`` is served (this server; "" for an unknown model)."""
        name = (await _json(request)).get("model")
        return {"address": str(request.base_url).rstrip("/") if name in ctx.backends else ""}

    @app.post("/receive_heart_beat", dependencies=key, include_in_schema=False)
    async def receive_heart_beat():
        return {"exist": True}

    @app.post("/worker_get_status", dependencies=key, tags=["llava"])
    async def worker_get_status():
        """LLaVA worker: model names, speed and the queue length summed over the models."""
        health = [await b.health() for b in ctx.backends.values()]
        return {"model_names": ctx.names, "speed": 1, "queue_length": sum(int(h.get("queue_depth") or 0)
                                                                          for h in health)}

    @app.post("/worker_generate_stream", dependencies=key, tags=["llava"])
    async def worker_generate_stream(request: Request):
        """LLaVA worker: NUL-delimited JSON chunks ``{"text": prompt + answer so far, "error_code": 0}``."""
        rid = request.state.request_id
        try:
            params = await _json(request)
            backend = ctx.backend(params.get("model"))
            job, prompt = await run_in_threadpool(worker_request, params, ctx.settings)
            events = await ctx.stream(backend, job, rid)
        except ApiError as err:
            return Response(error_chunk(err), err.status, headers=err.headers, media_type="application/octet-stream")

        async def chunks():
            text = prompt
            async for event in events:
                if "text" in event:
                    text += event["text"]
                    yield chunk({"text": text, "error_code": 0})
                elif "answer" in event:
                    answer = event["answer"]
                    yield chunk({"text": prompt + answer.text, "error_code": 0, "finish_reason": answer.finish_reason,
                                 "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.tokens}})
                else:
                    yield error_chunk(event["error"])

        return StreamingResponse(chunks(), media_type="application/octet-stream")
