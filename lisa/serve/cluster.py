"""``lisa serve`` on Ray Serve: replicas, several models, one or many machines.

The application is a ``router`` deployment, whose replicas run the same FastAPI app as the
one-process server (``create_app``, built on the replica through ``serve.ingress``), and one
deployment per model (``model-<name>``), whose replicas each load the model and run its
``LocalBackend`` (queue, batched decoding, streaming). The router reaches the models through
deployment handles, so Ray Serve spreads the requests over the replicas, queues or refuses them
(``max_ongoing_requests``, ``max_queued_requests``) and replaces a replica that dies.

``lisa serve --replicas N`` builds it with :func:`build_app` and runs it (:func:`run`); Ray's own
CLI uses :func:`build`::

    serve run lisa.serve.cluster:build models="ckpt/a:replicas=2 ckpt/b" max_new_tokens=256
    serve deploy config.yaml     # import_path: lisa.serve.cluster:build, args: {...} (docs/serving.md)
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
from dataclasses import asdict, fields

from .app import ServeSettings
from .backend import LocalBackend
from .models import ModelSpec, model_specs

log = logging.getLogger("lisa.serve")
APP_NAME = "lisa"
RAY_MISSING = ("serving with Ray (--replicas, --address, lisa.serve.cluster) needs Ray Serve, which is not "
               "installed: pip install 'lisa[cluster]' (or pip install 'ray[serve]')")


def require_ray():
    try:
        import ray  # noqa: F401
        from ray import serve
    except ImportError:
        raise RuntimeError(RAY_MISSING) from None
    return serve


def deployment_name(model: str) -> str:
    return "model-" + re.sub(r"[^A-Za-z0-9_-]", "_", model)


class ModelReplica:
    """One replica of a model deployment: the model, its queue and worker thread."""

    def __init__(self, spec: dict, settings: ServeSettings, threads: int | None = None, cache_size: int = 8):
        from ray import serve

        if threads:
            import torch

            torch.set_num_threads(threads)
        spec = ModelSpec(**spec)
        pipe = spec.load(settings.max_new_tokens, cache_size)
        replica = serve.get_replica_context().replica_id.unique_id
        # Ray Serve hands a replica at most max_ongoing_requests at once: its own queue never overflows
        self.backend = LocalBackend(spec.name, pipe, settings, replica, max_queue=max_ongoing(settings))
        self.backend.start()
        log.info("replica %s of %s ready (pid %d)", replica, spec.name, os.getpid())

    async def generate(self, request, request_id: str = ""):
        return await self.backend.generate(request, request_id)

    async def stream(self, request, request_id: str = ""):
        async for event in self.backend.stream(request, request_id):
            yield event

    async def info(self) -> dict:
        return self.backend.describe()

    async def health(self) -> dict:
        return self.backend.stats()

    def check_health(self) -> None:  # Ray Serve's periodic probe: a failure gets the replica replaced
        if not self.backend.worker.alive:
            raise RuntimeError("the model worker thread has stopped")

    def __del__(self):
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.stop()


def max_ongoing(settings: ServeSettings) -> int:
    """Requests a replica holds at once: one batch decoding and the next one gathering."""
    return 2 * settings.max_batch


def _router_builder(names: dict[str, str], settings: ServeSettings):
    """The function ``serve.ingress`` calls on each router replica to make its app."""

    def build_router_app():
        from ray import serve

        from .app import create_app
        from .remote import RayBackend

        app_name = serve.get_replica_context().app_name
        backends = {name: RayBackend(name, serve.get_deployment_handle(dep, app_name=app_name), dep, app_name)
                    for name, dep in names.items()}
        return create_app(backends, settings)

    return build_router_app


def build_app(specs: list[ModelSpec], settings: ServeSettings, replicas: int = 1, router_replicas: int = 1,
              threads: int | None = None, cache_size: int = 8):
    """The Ray Serve application: a router and one deployment per model."""
    serve = require_ray()
    models, names = [], {}
    for spec in specs:
        dep = deployment_name(spec.name)
        names[spec.name] = dep
        options = {"num_cpus": 1.0 if spec.num_cpus is None else spec.num_cpus, "num_gpus": spec.num_gpus or 0}
        model = serve.deployment(
            ModelReplica, name=dep, num_replicas=spec.replicas or replicas, ray_actor_options=options,
            max_ongoing_requests=max_ongoing(settings), max_queued_requests=spec.max_queue or settings.max_queue,
            graceful_shutdown_timeout_s=5.0, health_check_period_s=5.0)
        models.append(model.bind(asdict(spec), settings, threads, cache_size))
    router = serve.deployment(serve.ingress(_router_builder(names, settings))(), name="router",
                              num_replicas=router_replicas, ray_actor_options={"num_cpus": 0},
                              max_ongoing_requests=1000, graceful_shutdown_timeout_s=5.0)
    # the models are bound as the router's arguments so that they are part of the same application
    return router.bind(*models)


def build(args: dict):
    """Builder for Ray's CLI (``serve run lisa.serve.cluster:build key=value ...``, ``serve deploy``).

    ``models``: a list of specs or objects (see ``lisa.serve.models``), or one string of specs
    separated by spaces; ``replicas``, ``router_replicas``, ``threads``, ``cache_size``; every other
    key is a ``ServeSettings`` field (``max_new_tokens``, ``max_batch``, ``batch_wait_ms``, ``api_key``, ...).
    Without ``api_key``, ``$LISA_API_KEY`` of the process that builds the application is used.
    """
    args = dict(args or {})
    if not args.get("api_key") and os.environ.get("LISA_API_KEY"):
        args["api_key"] = os.environ["LISA_API_KEY"]
    entries = args.pop("models", None)
    if isinstance(entries, str):
        entries = entries.split()
    specs = []
    for i, entry in enumerate(entries or []):
        specs.extend(model_specs([entry]) if isinstance(entry, str) else [ModelSpec.from_dict(entry, f"models[{i}]")])
    if not specs:
        raise ValueError("lisa.serve.cluster:build needs models=... (model folders or specs)")
    top = {k: args.pop(k) for k in ("replicas", "router_replicas", "threads", "cache_size") if k in args}
    known = {f.name: f for f in fields(ServeSettings)}
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)} for lisa.serve.cluster:build")
    values = {}
    for key, value in args.items():
        default = getattr(ServeSettings, key, None)
        if isinstance(default, bool):
            value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        elif isinstance(default, (int, float)) and not isinstance(value, (int, float)):
            value = type(default)(value)
        values[key] = value
    ints = {k: int(v) for k, v in top.items()}
    return build_app(specs, ServeSettings(**values), replicas=ints.get("replicas", 1),
                     router_replicas=ints.get("router_replicas", 1), threads=ints.get("threads"),
                     cache_size=ints.get("cache_size", 8))


def run(specs: list[ModelSpec], settings: ServeSettings, host: str, port: int, address: str | None = None,
        replicas: int = 1, router_replicas: int = 1, threads: int | None = None, cache_size: int = 8,
        num_cpus: float | None = None, app_name: str = APP_NAME, route_prefix: str = "/") -> int:
    """Start (or join, with ``address``) a Ray cluster, deploy, and serve until SIGINT/SIGTERM.

    A cluster started here is shut down on the way out, with every Ray process it started; a joined
    cluster keeps running and only loses this application (Ray Serve's HTTP port is the cluster's:
    ``host``/``port`` only apply when Serve is not running there yet)."""
    serve = require_ray()
    import ray

    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    started_here = address is None
    try:
        if started_here:
            ray.init(address="local", include_dashboard=False, num_cpus=num_cpus, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
        for sig in signals:  # ray.init may have put its own handlers in place
            signal.signal(sig, lambda *_: stop.set())
        if stop.is_set():
            return 0
        log.info("Ray cluster at %s", ray.get_runtime_context().gcs_address)
        print(f"lisa serve: Ray cluster at {ray.get_runtime_context().gcs_address}", flush=True)
        serve.start(http_options={"host": host, "port": port})
        app = build_app(specs, settings, replicas, router_replicas, threads, cache_size)
        serve.run(app, name=app_name, route_prefix=route_prefix, blocking=False)
        print(f"lisa serve: {len(specs)} model(s) on Ray Serve at http://{host}:{port}{route_prefix.rstrip('/')}",
              flush=True)
        while not stop.wait(0.5):
            pass
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            if ray.is_initialized():
                if started_here:
                    serve.shutdown()
                else:
                    serve.delete(app_name)
        finally:
            ray.shutdown()
