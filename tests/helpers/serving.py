"""What the tests of a running ``lisa serve`` share: test images, their PNG bytes, the tiny plain LLaVA
served beside the tiny LISA, and the in-process pipelines whose answers the server must give."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from helpers.server import ServerProcess


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def data_url(arr: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png(arr)).decode()


def boxed_image(seed: int, size: tuple[int, int], box: tuple[int, int, int, int],
                color: tuple[int, int, int]) -> np.ndarray:
    """Random RGB noise of ``size`` (height, width) from ``seed`` with one flat box, ``box`` being
    (top, bottom, left, right), in ``color``: something for a prompt to point at."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
    top, bottom, left, right = box
    img[top:bottom, left:right] = color
    return img


def tiny_llava_ckpt(tmp_path_factory, name: str = "llava") -> Path:
    """A tiny random plain LLaVA v1.5 checkpoint in a fresh temporary folder, as ``<tmp>/<name>``."""
    from lisa.checkpoint.tiny import make_tiny_llava

    out = tmp_path_factory.mktemp("llava") / name
    make_tiny_llava(out, version="v1.5")
    return out


def load_pipes(ckpts: dict[str, Path], max_new_tokens: int) -> dict:
    """One in-process CPU pipeline a served model name: the answers a server of those models must give."""
    from lisa.inference.pipeline import LisaPipeline

    return {name: LisaPipeline.from_pretrained(path, device="cpu", max_new_tokens=max_new_tokens, progress=False)
            for name, path in ckpts.items()}


def lisa_and_llava_server(seg_ckpt: Path, llava_ckpt: Path, max_new_tokens: int, *extra: str) -> ServerProcess:
    """``lisa serve`` of the tiny LISA as model ``lisa`` and the tiny LLaVA as ``llava`` on the CPU, one
    thread a process; ``extra`` are more ``lisa serve`` flags. Use it as ``with ... as srv``."""
    args = ["--models", f"{seg_ckpt}:name=lisa", f"{llava_ckpt}:name=llava", "--device", "cpu",
            "--max_new_tokens", str(max_new_tokens), *extra, "--log_level", "warning"]
    return ServerProcess("serve", args, env={"OMP_NUM_THREADS": "1"})
