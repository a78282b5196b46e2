"""What every route of the app shares: the served models by name, the settings, the API-key check,
and the one mapping from a backend's failure to the HTTP error the client sees."""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import AsyncIterator

from fastapi import Request

from ..inference.limits import PromptError
from ..inference.request import GenerationRequest
from .backend import Answer, ModelError
from .inputs import ApiError
from .queue import QueueFull

log = logging.getLogger("lisa.serve")

# Ray Serve's own exceptions, matched by name so that this module does not need Ray installed.
BACKPRESSURE = ("BackPressureError",)


def _ray_cause(exc: BaseException) -> BaseException:
    """A Ray task error carries the replica's exception as ``cause``; anything else is itself."""
    return getattr(exc, "cause", None) or exc if type(exc).__name__.startswith("RayTaskError") else exc


class ServeContext:
    def __init__(self, backends: dict, settings):
        if not backends:
            raise ValueError("no model to serve")
        self.backends = dict(backends)
        self.settings = settings

    @property
    def names(self) -> list[str]:
        return list(self.backends)

    def backend(self, name: str | None = None):
        """The model called ``name`` (the first model when no name is given)."""
        if name is None or name == "":
            return next(iter(self.backends.values()))
        if not isinstance(name, str) or name not in self.backends:
            raise ApiError(404, "model_not_found",
                           f"no model named {name!r} is served; choose one of {', '.join(self.names)}")
        return self.backends[name]

    def require_key(self, request: Request) -> None:
        """FastAPI dependency: the API key, when the server has one."""
        key = self.settings.api_key
        if key is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not given or not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(401, "unauthorized", "a valid API key is required (Authorization: Bearer <key> "
                                                "or X-API-Key: <key>)", {"WWW-Authenticate": "Bearer"})

    def admit(self, backend, prompt: str, history, max_new: int) -> None:
        """The model's context accounting before the image is looked at (tokens only), where the
        model runs in this process; a Ray Serve replica makes the same check before it decodes."""
        pipe = getattr(backend, "pipe", None)
        if pipe is None or not hasattr(pipe, "plan"):
            return
        try:
            pipe.plan(GenerationRequest(None, prompt, history, max_new_tokens=max_new))
        except PromptError as e:
            raise ApiError(422, e.code, str(e)) from None

    def retry_after(self, backend) -> int:
        worker = getattr(backend, "worker", None)
        if worker is None:
            return max(self.settings.retry_after_s, 1)
        return max(self.settings.retry_after_s, math.ceil(worker.depth * worker.seconds_per_request))

    def api_error(self, exc: BaseException, backend, request_id: str) -> ApiError:
        """The client's view of a failure: a status, a code and a message with the cause, no traceback."""
        exc = _ray_cause(exc)
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, QueueFull) or type(exc).__name__ in BACKPRESSURE:
            wait = self.retry_after(backend)
            return ApiError(503, "queue_full", f"the model {backend.name!r} is busy ({exc}); retry in about "
                                               f"{wait} s", {"Retry-After": str(wait)})
        if isinstance(exc, ModelError):
            if exc.kind == "invalid_prompt":
                return ApiError(422, "invalid_prompt", exc.message)
            if exc.kind in ("invalid_image", "image_too_large"):
                return ApiError(400 if exc.kind == "invalid_image" else 413, exc.kind, exc.message)
            if exc.kind in ("out_of_memory", "unavailable"):
                wait = self.retry_after(backend)
                return ApiError(503, exc.kind, f"{exc.message} (request id {request_id})", {"Retry-After": str(wait)})
            return ApiError(500, "model_error", f"{exc.message} (request id {request_id})")
        log.error("request %s failed", request_id, exc_info=exc)
        return ApiError(500, "model_error", f"the model failed on this request (request id {request_id})")

    async def generate(self, backend, request, request_id: str) -> Answer:
        try:
            return await backend.generate(request, request_id)
        except Exception as e:  # noqa: BLE001 - every failure becomes an ApiError with its cause
            raise self.api_error(e, backend, request_id) from None

    async def stream(self, backend, request, request_id: str) -> AsyncIterator[dict]:
        """The backend's events; a failure before the first one raises ``ApiError`` here (so the client
        gets a plain HTTP error), a later one comes as a last ``{"error": ApiError}`` event."""
        events = backend.stream(request, request_id)
        try:
            first = await anext(events)
        except Exception as e:  # noqa: BLE001
            await events.aclose()
            raise self.api_error(e, backend, request_id) from None

        async def rest():
            try:
                yield first
                async for event in events:
                    yield event
            except Exception as e:  # noqa: BLE001
                yield {"error": self.api_error(e, backend, request_id)}
            finally:
                await events.aclose()

        return rest()
