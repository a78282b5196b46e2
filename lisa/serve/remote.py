"""``RayBackend``: one model's Ray Serve deployment, seen by the app through a deployment handle.

It has the methods of ``LocalBackend``; the replicas run ``LocalBackend`` themselves. Ray Serve
routes each call to a replica with room (``max_ongoing_requests``), queues at most
``max_queued_requests`` more and refuses the rest (``BackPressureError``, answered 503). A call that
meets a replica that has just died is sent again (unary calls, and streams that have not produced
anything yet), while Ray Serve starts a replacement.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from .backend import Answer, ModelError

log = logging.getLogger("lisa.serve")
ATTEMPTS = 4


def _replica_gone(exc: BaseException) -> bool:
    from ray.exceptions import RayActorError

    return isinstance(exc, RayActorError) or type(exc).__name__ in ("ActorDiedError", "ActorUnavailableError")


class RayBackend:
    def __init__(self, name: str, handle, deployment: str, app_name: str):
        self.name, self.handle, self.deployment, self.app_name = name, handle, deployment, app_name

    async def _pause(self, attempt: int, exc: BaseException) -> None:
        if attempt + 1 >= ATTEMPTS:
            raise ModelError("unavailable", f"no replica of {self.name!r} could answer; they are restarting") from None
        log.warning("a replica of %s went away (%s); sending the request again", self.name, type(exc).__name__)
        await asyncio.sleep(0.5 * (attempt + 1))

    async def generate(self, request, request_id: str = "") -> Answer:
        for attempt in range(ATTEMPTS):
            try:
                return await self.handle.generate.remote(request, request_id)
            except Exception as e:  # noqa: BLE001 - only a dead replica is retried
                if not _replica_gone(e):
                    raise
                await self._pause(attempt, e)
        raise AssertionError("unreachable")

    async def stream(self, request, request_id: str = "") -> AsyncIterator[dict]:
        for attempt in range(ATTEMPTS):
            started = False
            try:
                async for event in self.handle.options(stream=True).stream.remote(request, request_id):
                    started = True
                    yield event
                return
            except Exception as e:  # noqa: BLE001
                if started or not _replica_gone(e):
                    raise
                await self._pause(attempt, e)

    async def info(self) -> dict:
        return await self.handle.info.remote()

    async def health(self) -> dict:
        """The deployment's state as Ray Serve's controller sees it, with its replicas by state."""
        from ray import serve

        try:
            status = await asyncio.to_thread(serve.status)
            dep = status.applications[self.app_name].deployments[self.deployment]
        except Exception as e:  # noqa: BLE001 - health must answer even when the controller does not
            return {"status": "unknown", "message": f"Ray Serve status unavailable ({type(e).__name__})"}
        replicas = {str(k): int(v) for k, v in dict(dep.replica_states).items()}
        running = replicas.get("RUNNING", 0)
        state = getattr(dep.status, "value", str(dep.status))
        return {"status": "ok" if running > 0 else "unavailable", "deployment": self.deployment,
                "deployment_status": state, "replicas": replicas, "message": dep.message or ""}
