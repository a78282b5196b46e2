"""Start-up latency: seconds from process start to the first answer of a one-shot `lisa chat`.

    python bench/startup.py                      # tiny model written to a temp folder, 5 runs
    python bench/startup.py --version MODEL --image IMG --runs 7

Each run is a fresh `python -m lisa chat --image ... --prompt ...` process; the clock stops when its
first answer line ("text_output: ...") arrives on stdout. For reference it also times fresh
processes that only import torch, torch and transformers' top level, and everything `lisa chat`
imports (torch, transformers' LLaMA, CLIP and SAM classes, this package) without loading a model or
answering; runs are interleaved, and the machine's load average is printed (the figures are
wall-clock times: other processes on the machine slow them).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOORS = {
    "import torch": "import torch",
    "import torch, transformers": "import torch, transformers",
    "lisa chat's imports only": "import lisa.chat.cli, lisa.inference.pipeline, lisa.checkpoint.loader",
}


def time_until(cmd: list[str], marker: str | None, env: dict) -> tuple[float, float]:
    """Seconds from spawning ``cmd`` to the first stdout line starting with ``marker`` (or its exit),
    and the CPU seconds (user + system) the whole process used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    took = None
    for line in proc.stdout:
        if marker and line.startswith(marker) and took is None:
            took = time.perf_counter() - t0
    proc.wait()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr.read()}")
    if marker and took is None:
        raise RuntimeError(f"no line starting with {marker!r} in the output of {' '.join(cmd)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return (took if took is not None else time.perf_counter() - t0), cpu


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default=None, help="model folder (default: a tiny model written now)")
    ap.add_argument("--image", default=None, help="default: a 160x120 random image written now")
    ap.add_argument("--prompt", default="Segment the red circle.")
    ap.add_argument("--max_new_tokens", type=int, default=16)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no_floors", action="store_true", help="skip the import-only reference processes")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `lisa chat` flags")
    a = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="lisa_bench_startup_"))
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    if a.version is None:
        from lisa.checkpoint.tiny import make_tiny

        a.version = str(tmp / "tiny")
        make_tiny(a.version, seed=0)
    if a.image is None:
        import numpy as np
        from PIL import Image

        a.image = str(tmp / "image.png")
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(a.image)
    chat = [sys.executable, "-m", "lisa", "chat", "--version", a.version, "--image", a.image, "--prompt", a.prompt,
            "--max_new_tokens", str(a.max_new_tokens), "--vis_save_path", str(tmp / "vis"), *a.extra]
    print(f"load average before: {load()}")
    commands = {"lisa chat, first answer": (chat, "text_output:")}
    if not a.no_floors:
        commands.update({name: ([sys.executable, "-c", code], None) for name, code in FLOORS.items()})
    rows = {name: [] for name in commands}
    for _ in range(a.runs):  # interleaved, so a change in the machine's load touches every row alike
        for name, (cmd, marker) in commands.items():
            rows[name].append(time_until(cmd, marker, env))
    print(f"load average after: {load()}")
    print(f"{'(s, ' + str(a.runs) + ' fresh processes)':<40}{'median':>8}{'min':>8}{'max':>8}{'CPU s':>8}")
    for name, v in rows.items():
        wall = [w for w, _ in v]
        print(f"{name:<40}{statistics.median(wall):>8.2f}{min(wall):>8.2f}{max(wall):>8.2f}"
              f"{statistics.median(c for _, c in v):>8.2f}")
    print("(CPU s: user + system time of the whole process, less sensitive to other load than the wall clock)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
