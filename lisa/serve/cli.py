"""``lisa serve``: the HTTP API (FastAPI + uvicorn) in front of one loaded model."""

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
    ap.add_argument("--max_queue", type=int, default=16, help="requests waiting for the model; more get 503")
    ap.add_argument("--max_batch", type=int, default=4,
                    help="queued requests taken per worker turn (grouped by image, each image encoded once)")
    ap.add_argument("--max_body_mb", type=float, default=20.0, help="request body limit (MiB)")
    ap.add_argument("--max_pixels", type=int, default=40_000_000, help="image pixel limit (width x height)")
    ap.add_argument("--max_prompt_chars", type=int, default=4000)
    ap.add_argument("--cache_size", type=int, default=8, help="image encodings kept for reuse")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch (default: torch's choice; 1 is often fastest on a busy CPU)")
    ap.add_argument("--log_level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not api_key and not is_loopback(args.host) and not args.allow_remote:
        print(f"lisa serve: refusing to listen on {args.host!r} without an API key; set --api_key or "
              f"${API_KEY_ENV}, bind a loopback address, or pass --allow_remote", file=sys.stderr)
        return 2
    for name in ("max_queue", "max_batch", "max_new_tokens", "max_pixels"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, not {getattr(args, name)}")

    import uvicorn

    from ..inference.flags import load_pipeline
    from .app import ServeSettings, create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ServeSettings(max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_pixels=args.max_pixels,
                                 max_prompt_chars=args.max_prompt_chars, max_new_tokens=args.max_new_tokens,
                                 max_queue=args.max_queue, max_batch=args.max_batch, api_key=api_key,
                                 version=str(args.version))
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        pipe = load_pipeline(args)
    except (ValueError, OSError) as e:
        print(f"lisa serve: {e}", file=sys.stderr)
        return 2
    pipe.cache.max_items = args.cache_size
    app = create_app(pipe, settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, workers=1,
                timeout_graceful_shutdown=5)
    return 0
