"""ASGI middleware: a request id on every answer, and the request body size limit."""

from __future__ import annotations

import json
import uuid

# A body announced larger than the limit is read and dropped up to this many times the limit (so
# the client sees the 413 instead of a reset connection), beyond that the connection is just closed.
_DRAIN_FACTOR = 4


def error_body(status: int, code: str, message: str, request_id: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "request_id": request_id}}).encode()


class RequestLimits:
    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", request_id.encode())]
            await send(message)

        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send_with_id)

        limit = self.max_body_bytes
        announced = dict(scope.get("headers", [])).get(b"content-length")
        too_large = False
        if announced is not None:
            try:
                too_large = int(announced) > limit
            except ValueError:
                return await self._reject(send_with_id, 400, "invalid_request", "bad Content-Length header",
                                          request_id)
        chunks, size = [], 0
        while True:
            message = await receive()
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
            return await self._reject(send_with_id, 413, "body_too_large",
                                      f"the request body has {shown} bytes; the limit is {limit}", request_id)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send_with_id)

    @staticmethod
    async def _reject(send, status: int, code: str, message: str, request_id: str):
        payload = error_body(status, code, message, request_id)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
