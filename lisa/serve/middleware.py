"""ASGI middleware: a request id on every answer, the API key, the body size limit and read timeout,
and a JSON 500 for anything unexpected.

Order matters: the API key is checked from the headers before a byte of the body is read, the body
is then read with a size limit and a deadline, and an unexpected exception becomes a complete 500
answer here, so the server never sees it and keeps the connection alive for the next request.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import uuid

log = logging.getLogger("lisa.serve")

# A body announced larger than the limit is read and dropped up to this many times the limit (so
# the client sees the 413 instead of a reset connection), beyond that the connection is just closed.
_DRAIN_FACTOR = 4
# Open without a key: the liveness probe and the API description; every other route needs it.
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def error_body(status: int, code: str, message: str, request_id: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "request_id": request_id}}).encode()


def api_key_from(headers: dict) -> str:
    """The key of ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (bytes headers), or ""."""
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get(b"x-api-key", b"").decode("latin-1").strip()


class RequestLimits:
    def __init__(self, app, max_body_bytes: int, api_key: str | None = None, body_timeout_s: float = 30.0):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.api_key = api_key
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self._handle(scope, receive, send_with_id, request_id)
        except Exception:  # noqa: BLE001 - answered here: re-raised, the server would drop the connection
            log.exception("request %s failed", request_id)
            if not started:
                await self._reject(send_with_id, 500, "internal_error", "internal server error", request_id,
                                   close=False)

    async def _handle(self, scope, receive, send, request_id: str):
        headers = dict(scope.get("headers", []))
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):  # mounted under a prefix (Ray Serve's route_prefix)
            path = path[len(root):]
        if self.api_key is not None and path not in PUBLIC_PATHS:
            given = api_key_from(headers)
            if not given or not hmac.compare_digest(given.encode(), self.api_key.encode()):
                return await self._reject(
                    send, 401, "unauthorized", "a valid API key is required (Authorization: Bearer <key> or "
                    "X-API-Key: <key>)", request_id, extra=[(b"www-authenticate", b"Bearer")])
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)

        limit = self.max_body_bytes
        announced = headers.get(b"content-length")
        too_large = False
        if announced is not None:
            try:
                too_large = int(announced) > limit
            except ValueError:
                return await self._reject(send, 400, "invalid_request", "bad Content-Length header", request_id)
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                return await self._reject(send, 408, "body_timeout", f"the request body did not arrive within "
                                          f"{self.body_timeout_s:g} s", request_id)
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                too_large = True
            if not too_large:
                chunks.append(body)
            elif size > limit * _DRAIN_FACTOR:
                break
            if not message.get("more_body", False):
                break
        if too_large:
            shown = announced.decode() if announced is not None else f"more than {limit}"
            return await self._reject(send, 413, "body_too_large",
                                      f"the request body has {shown} bytes; the limit is {limit}", request_id)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _reject(send, status: int, code: str, message: str, request_id: str, close: bool = True,
                      extra: list | None = None):
        payload = error_body(status, code, message, request_id)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if close:  # the rest of the body was not read: the connection cannot carry another request
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
        await send({"type": "http.response.body", "body": payload})
