"""The served request path holds bounded memory: a real ``lisa serve`` process answers a burst of
maximal legal requests (as many pixels, prompt characters, new tokens and masks as its flags allow,
more requests at once than its queue takes) and its peak resident memory, read from
``/proc/<pid>/status`` (VmHWM), grows by less than a stated bound over its idle size.

The bound is one request's worth: the decoded image once in PIL and once as an array, one float mask
being thresholded and every boolean mask (``PER_PIXEL`` bytes per allowed pixel), plus a fixed
allowance for allocator slack and thread stacks. Decoding each queued request up front, as the server
did, needed about 24 bytes per pixel per waiting request: several times the bound for this burst.
The same server also shows that the command's connection deadlines are wired in.
"""

from __future__ import annotations

import io
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from helpers.server import ServerProcess

MAX_PIXELS = 4_000_000  # 2000 x 2000
MAX_MASKS = 2
MAX_NEW = 24  # the tilted tiny model writes three [SEG]s in that many tokens: one more than the cap
MAX_QUEUE = 6
PROMPT = "Segment the red box. " * 14
PROMPT_CHARS = len(PROMPT)  # the longest prompt the server takes
PER_PIXEL = 2 * 3 + 4 + MAX_MASKS  # RGB in PIL and as an array, one float mask, the boolean masks
SLACK = 48 * 2**20
BOUND = PER_PIXEL * MAX_PIXELS + SLACK

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> bool:
    """Set VmHWM back to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def maximal_png(seed: int) -> bytes:
    """2000 x 2000 pixels (the limit), a few hundred KB as PNG (smooth content compresses)."""
    y, x = np.mgrid[0:2000, 0:2000]
    img = np.stack([(x // 8) % 256, (y // 8) % 256, np.full_like(x, 40 * seed)], -1).astype(np.uint8)
    img[500:900, 300 + 50 * seed:1200] = (255, 0, 0)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(seg_ckpt):
    env = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with ServerProcess("serve", ["--version", str(seg_ckpt), "--device", "cpu", "--log_level", "warning",
                                 "--max_new_tokens", str(MAX_NEW), "--max_masks", str(MAX_MASKS), "--max_pixels",
                                 str(MAX_PIXELS), "--max_queue", str(MAX_QUEUE), "--max_batch", "2",
                                 "--max_prompt_chars", str(PROMPT_CHARS), "--max_body_mb", "4",
                                 "--header_timeout", "2", "--body_timeout", "2", "--threads", "1"],
                       env=env) as srv:
        yield srv


def test_peak_memory_of_a_burst_of_maximal_requests_is_bounded(server):
    pid = server.proc.pid
    images = [maximal_png(k) for k in range(3)]

    def post(k):
        return httpx.post(server.url + "/v1/segment", files={"image": ("x.png", images[k % 3], "image/png")},
                          data={"prompt": PROMPT, "max_new_tokens": str(MAX_NEW)}, timeout=300)

    warm = post(0)  # first use: lazy imports and buffers belong to the idle size
    assert warm.status_code == 200, warm.text
    idle = status_kib(pid, "VmRSS") * 1024
    exact = reset_peak(pid)
    with ThreadPoolExecutor(MAX_QUEUE + 4) as pool:
        replies = list(pool.map(post, range(MAX_QUEUE + 4)))
    peak = status_kib(pid, "VmHWM") * 1024
    ok = [r for r in replies if r.status_code == 200]
    assert len(ok) >= MAX_QUEUE and {r.status_code for r in replies} <= {200, 503}, [r.text for r in replies][:2]
    for r in ok:
        body = r.json()
        assert body["image_size"] == [2000, 2000]
        assert len(body["masks"]) == MAX_MASKS and body["masks_dropped"] >= 1  # the cap was reached
    grew = peak - idle
    print(f"\nserve RSS idle {idle / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB over {len(ok)} maximal requests "
          f"(+{grew / 2**20:.0f} MiB, bound +{BOUND / 2**20:.0f} MiB, peak reset: {exact})")
    assert grew < BOUND
    time.sleep(0.5)
    after = status_kib(pid, "VmRSS") * 1024
    assert after - idle < BOUND / 2, f"{(after - idle) / 2**20:.0f} MiB still held after the burst"


def test_the_command_sets_connection_deadlines(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        t0 = time.monotonic()
        sock.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 500\r\n\r\n{")
        assert sock.recv(65536).startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 6  # --body_timeout 2
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        t0 = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # the headers never end
        assert sock.recv(1024) == b"" and time.monotonic() - t0 < 6  # --header_timeout 2
