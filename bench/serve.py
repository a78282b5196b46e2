"""Throughput and latency of ``lisa serve`` on loopback for N concurrent clients.

    python bench/serve.py                         # tiny random model, clients 1,4,16
    python bench/serve.py --version /path/LISA-7B --clients 1,2,8 --requests 32 --max_new_tokens 32
    python bench/serve.py --url http://127.0.0.1:8000 --api_key KEY   # an already running server
    python bench/serve.py --replicas 2 --clients 1,4,16               # Ray Serve, 2 replicas (lisa[cluster])
    python bench/serve.py --no_batch_decode                            # batching off: one request at a time

Each client sends its requests back to back (multipart image + prompt) over its own connection;
``--images`` distinct images are cycled, so later requests hit the server's image-encoding cache.
Prints one row per concurrency level: requests/s, latency percentiles, and how many got 503.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # helpers.server


def make_images(n: int, size: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        arr = rng.integers(0, 255, size=(size, size * 4 // 3, 3), dtype=np.uint8)
        arr[size // 4: size // 2, size // 3: size // 2 + i] = (220, 40, 40)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


async def run_level(url: str, clients: int, requests: int, images: list[bytes], prompt: str,
                    max_new_tokens: int | None, headers: dict) -> dict:
    import httpx

    latencies, codes = [], []
    counter = iter(range(requests))

    async def client(k: int):
        async with httpx.AsyncClient(base_url=url, timeout=600, headers=headers) as c:
            for i in counter:
                data = {"prompt": prompt}
                if max_new_tokens:
                    data["max_new_tokens"] = str(max_new_tokens)
                t0 = time.perf_counter()
                r = await c.post("/v1/segment", files={"image": ("b.png", images[i % len(images)], "image/png")},
                                 data=data)
                latencies.append(time.perf_counter() - t0)
                codes.append(r.status_code)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall = time.perf_counter() - t0
    ok = [lat for lat, code in zip(latencies, codes) if code == 200]
    pct = (lambda q: float(np.percentile(ok, q)) * 1000) if ok else (lambda q: float("nan"))
    return {"clients": clients, "requests": len(codes), "ok": len(ok), "busy_503": codes.count(503),
            "errors": len(codes) - len(ok) - codes.count(503), "wall_s": wall, "rps": len(ok) / wall,
            "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": max(ok) * 1000 if ok else float("nan")}


def print_table(rows: list[dict], title: str) -> None:
    cols = [("clients", "{:>7}"), ("requests", "{:>8}"), ("ok", "{:>5}"), ("busy_503", "{:>8}"), ("errors", "{:>6}"),
            ("rps", "{:>8.2f}"), ("p50_ms", "{:>8.1f}"), ("p90_ms", "{:>8.1f}"), ("p99_ms", "{:>8.1f}"),
            ("max_ms", "{:>8.1f}")]
    print(title)
    print("  ".join(f"{name:>{len(fmt.format(0)) if 'f' not in fmt else 8}}" for name, fmt in cols))
    for row in rows:
        print("  ".join(fmt.format(row[name]) for name, fmt in cols))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="benchmark a running server instead of starting one")
    ap.add_argument("--api_key", default=None)
    ap.add_argument("--version", default=None, help="model folder (default: a fresh tiny random model)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--clients", default="1,4,16", help="comma-separated concurrency levels")
    ap.add_argument("--requests", type=int, default=48, help="requests per level")
    ap.add_argument("--images", type=int, default=4, help="distinct images, cycled")
    ap.add_argument("--image_size", type=int, default=240, help="image height in pixels")
    ap.add_argument("--prompt", default="Can you segment the red box in this image? [SEG]")
    ap.add_argument("--max_new_tokens", type=int, default=8)
    ap.add_argument("--max_batch", type=int, default=4)
    ap.add_argument("--max_queue", type=int, default=64)
    ap.add_argument("--batch_wait_ms", type=float, default=0.0)
    ap.add_argument("--no_batch_decode", action="store_true", help="decode a turn's requests one at a time")
    ap.add_argument("--threads", type=int, default=None, help="--threads for the server (torch CPU threads)")
    ap.add_argument("--replicas", type=int, default=None, help="serve through Ray Serve with this many replicas")
    ap.add_argument("--num_cpus", type=float, default=1.0, help="with --replicas: CPUs per replica")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.clients.split(",") if x.strip()]
    images = make_images(args.images, args.image_size)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}

    server = None
    tmp = None
    url = args.url
    if url is None:
        from helpers.server import ServerProcess

        version = args.version
        if version is None:
            from lisa.checkpoint.tiny import make_tiny

            tmp = tempfile.TemporaryDirectory(prefix="lisa-bench-")
            version = str(Path(tmp.name) / "tiny")
            make_tiny(version)
        flags = ["--version", version, "--device", args.device, "--log_level", "warning", "--max_new_tokens",
                 str(args.max_new_tokens), "--max_batch", str(args.max_batch), "--max_queue", str(args.max_queue),
                 "--batch_wait_ms", str(args.batch_wait_ms)]
        flags += ["--threads", str(args.threads)] if args.threads else []
        flags += ["--no_batch_decode"] if args.no_batch_decode else []
        env = {}
        if args.replicas:
            flags += ["--replicas", str(args.replicas), "--num_cpus", str(args.num_cpus)]
            # a token of this run's own: Ray's token authentication without writing ~/.ray
            env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0"}
        server = ServerProcess("serve", flags, env=env, timeout=1800).start().wait_ready()
        url = server.url
    try:
        import httpx

        info = httpx.get(url + "/v1/model", headers=headers, timeout=30).json()
        llm = info.get("llm", {})
        batching = info.get("batching", {})
        where = f"Ray Serve, {args.replicas} replica(s)" if args.replicas else "one process"
        title = (f"lisa serve at {url} ({where}): {llm.get('model_type')} {llm.get('num_hidden_layers')} layers, "
                 f"{info.get('dtype')} on {info.get('device')} ({args.threads or 'default'} threads), "
                 f"max_new_tokens {args.max_new_tokens}, max_batch {batching.get('max_batch')} "
                 f"(decode together: {batching.get('decode_together')}), {args.images} images of {args.image_size}px")
        asyncio.run(run_level(url, 1, 2, images, args.prompt, args.max_new_tokens, headers))  # warm-up
        rows = [asyncio.run(run_level(url, n, args.requests, images, args.prompt, args.max_new_tokens, headers))
                for n in levels]
        print_table(rows, title)
        if args.json:
            Path(args.json).write_text(json.dumps({"title": title, "rows": rows}, indent=2))
    finally:
        if server is not None:
            server.close()
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
