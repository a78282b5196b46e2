"""``lisa serve``: the HTTP API in front of one or more models: one process (FastAPI + uvicorn), or
Ray Serve replicas with ``--replicas`` / ``--address`` (the same app; ``pip install 'lisa[cluster]'``)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

API_KEY_ENV = "LISA_API_KEY"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    from ..inference.flags import add_model_args

    ap = argparse.ArgumentParser(prog="lisa serve", description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api_key", default=None,
                    help=f"require this key (Authorization: Bearer KEY or X-API-Key); default: ${API_KEY_ENV}")
    ap.add_argument("--allow_remote", action="store_true",
                    help="allow a non-loopback --host without an API key")
    ap.add_argument("--models", nargs="+", default=None, metavar="SPEC",
                    help="serve these models instead of --version: FOLDER[:key=value,...] (name, precision, quant="
                         "4bit|8bit, replicas, num_gpus, num_cpus, max_queue, ...) or a models .json/.yaml file")
    ap.add_argument("--max_queue", type=int, default=16, help="requests waiting for a model; more get 503")
    ap.add_argument("--max_batch", type=int, default=4,
                    help="queued requests taken per worker turn and decoded together in one batch")
    ap.add_argument("--batch_wait_ms", type=float, default=0.0,
                    help="after a turn's first request, wait up to this long for more to batch with it")
    ap.add_argument("--no_batch_decode", action="store_true",
                    help="answer a turn's requests one after the other (grouped by image) instead of in one batch")
    ap.add_argument("--image_dir", default=None,
                    help="folder whose files OpenAI-style requests may name as image_url (default: none)")
    ray = ap.add_argument_group("Ray Serve (pip install 'lisa[cluster]')")
    ray.add_argument("--replicas", type=int, default=None,
                     help="serve through Ray Serve with this many replicas per model (default for --models specs)")
    ray.add_argument("--address", default=None,
                     help="join this Ray cluster (e.g. 10.0.0.1:6379 or auto) instead of starting a local one")
    ray.add_argument("--num_gpus", type=float, default=None, help="GPUs per replica (fractions share a GPU)")
    ray.add_argument("--num_cpus", type=float, default=None, help="CPUs per replica (default 1)")
    ray.add_argument("--router_replicas", type=int, default=1, help="replicas of the HTTP app in front of the models")
    ray.add_argument("--ray_cpus", type=float, default=None,
                     help="CPUs the local Ray instance offers (default: the machine's; not with --address)")
    ray.add_argument("--app_name", default="lisa", help="Ray Serve application name (several can share a cluster)")
    ray.add_argument("--route_prefix", default="/", help="where the application is mounted on Ray Serve's HTTP port")
    ap.add_argument("--max_body_mb", type=float, default=20.0, help="request body limit (MiB)")
    ap.add_argument("--max_pixels", type=int, default=40_000_000, help="image pixel limit (width x height)")
    ap.add_argument("--max_prompt_chars", type=int, default=4000)
    ap.add_argument("--cache_size", type=int, default=8, help="image encodings kept for reuse")
    ap.add_argument("--header_timeout", type=float, default=10.0,
                    help="seconds a client has to send a request's headers; then the connection is closed")
    ap.add_argument("--body_timeout", type=float, default=30.0,
                    help="seconds a client has to send a request's body; then it gets 408")
    ap.add_argument("--timeout_keep_alive", type=int, default=5, help="seconds an idle connection stays open")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch (default: torch's choice; 1 is often fastest on a busy CPU)")
    ap.add_argument("--log_level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return ap


def model_defaults(args) -> dict:
    quant = "4bit" if args.load_in_4bit else "8bit" if args.load_in_8bit else None
    return {"precision": args.precision, "quant": quant, "device": args.device, "conv_type": args.conv_type,
            "vision_tower": args.vision_tower, "sam_config": args.sam_config,
            "model_max_length": args.model_max_length, "num_gpus": args.num_gpus, "num_cpus": args.num_cpus,
            "revision": args.revision, "max_masks": args.max_masks, "no_compile": args.no_compile,
            "model_base": args.model_base}


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not api_key and not is_loopback(args.host) and not args.allow_remote:
        print(f"lisa serve: refusing to listen on {args.host!r} without an API key; set --api_key or "
              f"${API_KEY_ENV}, bind a loopback address, or pass --allow_remote", file=sys.stderr)
        return 2
    for name in ("max_queue", "max_batch", "max_new_tokens", "max_pixels", "router_replicas"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, not {getattr(args, name)}")
    for name in ("header_timeout", "body_timeout", "timeout_keep_alive"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name} must be > 0, not {getattr(args, name)}")
    if args.max_masks < 0:
        ap.error(f"--max_masks must be >= 0, not {args.max_masks}")
    if args.replicas is not None and args.replicas < 1:
        ap.error(f"--replicas must be >= 1, not {args.replicas}")

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .app import ServeSettings
    from .models import model_specs

    try:
        settings = ServeSettings(max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_pixels=args.max_pixels,
                                 max_prompt_chars=args.max_prompt_chars, max_new_tokens=args.max_new_tokens,
                                 max_queue=args.max_queue, max_batch=args.max_batch, api_key=api_key,
                                 batch_wait_ms=args.batch_wait_ms, decode_together=not args.no_batch_decode,
                                 body_timeout_s=args.body_timeout, version=str(args.version),
                                 image_dir=args.image_dir)
        specs = [s.with_defaults(model_defaults(args)) for s in model_specs(args.models, args.version)]
    except (ValueError, OSError) as e:
        print(f"lisa serve: {e}", file=sys.stderr)
        return 2
    if args.replicas is not None or args.address is not None or any(s.replicas for s in specs):
        return serve_on_ray(args, specs, settings)

    import uvicorn

    from .app import create_app
    from .connections import uvicorn_protocol

    try:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        pipes = {spec.name: spec.load(args.max_new_tokens, args.cache_size) for spec in specs}
    except (ValueError, OSError) as e:
        print(f"lisa serve: {e}", file=sys.stderr)
        return 2
    app = create_app(pipes, settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, workers=1,
                timeout_graceful_shutdown=5, timeout_keep_alive=args.timeout_keep_alive,
                http=uvicorn_protocol(args.header_timeout), h11_max_incomplete_event_size=64 * 1024)
    return 0


def serve_on_ray(args, specs, settings) -> int:
    from .cluster import require_ray, run

    try:
        require_ray()
    except RuntimeError as e:
        print(f"lisa serve: {e}", file=sys.stderr)
        return 2
    if args.ray_cpus is not None and args.address is not None:
        print("lisa serve: --ray_cpus sizes a local Ray instance; it does not apply with --address", file=sys.stderr)
        return 2
    return run(specs, settings, args.host, args.port, address=args.address, replicas=args.replicas or 1,
               router_replicas=args.router_replicas, threads=args.threads, cache_size=args.cache_size,
               num_cpus=args.ray_cpus, app_name=args.app_name, route_prefix=args.route_prefix)
