"""In-process tests of the serve package: mask encodings, input checks, the worker queue, model errors."""

import asyncio
import io
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from lisa.images import EncodedImage
from lisa.inference.pipeline import LisaResult
from lisa.serve.inputs import ApiError, decode_image, history_from_messages
from lisa.serve.masks import decode_png, decode_rle, describe_mask, mask_bbox
from lisa.serve.queue import ModelWorker, QueueFull


def _png_bytes(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(width, height):
    """A PNG whose header claims width x height; its pixel data is a few bytes (a decompression bomb shape)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_mask_encodings_round_trip_with_area_and_bbox():
    rng = np.random.default_rng(0)
    mask = np.zeros((37, 53), bool)
    mask[5:20, 11:40] = True
    mask[25:30] = rng.random((5, 53)) > 0.5
    rle = describe_mask(mask, "rle")
    assert rle["area"] == int(mask.sum())
    ys, xs = np.nonzero(mask)
    assert rle["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert rle["rle"]["size"] == [37, 53] and isinstance(rle["rle"]["counts"], str)
    np.testing.assert_array_equal(decode_rle(rle["rle"]), mask)
    png = describe_mask(mask, "png")
    assert "rle" not in png and png["area"] == rle["area"]
    np.testing.assert_array_equal(decode_png(png["png"]), mask)
    assert mask_bbox(np.zeros((4, 4), bool)) == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="mask_format"):
        describe_mask(mask, "jpeg")


def test_decode_image_limits_and_errors():
    arr = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(_png_bytes(arr), 10_000), arr)
    grey = decode_image(_png_bytes(arr[..., 0]), 10_000)
    assert grey.shape == (20, 30, 3)
    with pytest.raises(ApiError) as e:  # header says 10^10 pixels: refused before any decoding
        decode_image(_png_header_only(100_000, 100_000), 40_000_000)
    assert e.value.status == 413 and "10000000000 pixels" in e.value.message
    with pytest.raises(ApiError) as e:  # below PIL's own bomb limit, above ours
        decode_image(_png_header_only(9000, 9000), 40_000_000)
    assert e.value.status == 413 and "9000x9000" in e.value.message
    with pytest.raises(ApiError) as e:
        decode_image(_png_bytes(arr), 599)
    assert e.value.status == 413 and "599" in e.value.message
    for bad in (b"not an image", _png_bytes(arr)[:60], b""):
        with pytest.raises(ApiError) as e:
            decode_image(bad, 10_000)
        assert e.value.status == 400


def test_messages_must_alternate_and_end_with_user():
    hist, prompt = history_from_messages([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                          {"role": "user", "content": "c"}], 100)
    assert hist == [("a", "b")] and prompt == "c"
    for bad in ([], [{"role": "assistant", "content": "x"}], [{"role": "user", "content": "a"}] * 2,
                [{"role": "user", "content": " "}], [{"role": "user"}], "nope"):
        with pytest.raises(ApiError) as e:
            history_from_messages(bad, 100)
        assert e.value.status == 422


class FakePipe:
    """Stands in for LisaPipeline: records calls, can block, fails on the prompt 'boom'."""

    def __init__(self):
        self.lock = threading.RLock()
        self.calls = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, image, prompt, history=None, max_new_tokens=None, key=None):
        self.started.set()
        self.gate.wait(10)
        if isinstance(image, EncodedImage):  # the server hands uploads over still encoded
            image = image.decode()
        self.calls.append((int(image[0, 0, 0]), prompt))
        if prompt == "boom":
            raise RuntimeError("secret internal detail")
        mask = np.zeros(image.shape[:2], bool)
        mask[: int(image[0, 0, 0]) + 1] = True
        return LisaResult(f"answer to {prompt}", [mask], [1], {
            "vision_tower": 0.0, "sam_encoder": 0.0, "prefill": 0.0, "decode": 0.0, "tokens": 1,
            "mask_decode": 0.0, "total": 0.0}, False)


def _image(value):
    return np.full((8, 8, 3), value, np.uint8)


def test_worker_groups_a_turn_by_image_and_bounds_the_queue():
    pipe = FakePipe()
    worker = ModelWorker(pipe, max_queue=4, max_batch=4, decode_together=False)
    worker.start()

    async def scenario():
        pipe.gate.clear()
        first = asyncio.ensure_future(worker.run(_image(9), "first"))
        await asyncio.get_running_loop().run_in_executor(None, pipe.started.wait, 5)
        # the worker is busy with "first": these four wait in the queue, the fifth does not fit
        waiting = [(1, "a1"), (2, "b1"), (1, "a2"), (2, "b2")]
        rest = [asyncio.ensure_future(worker.run(_image(v), p)) for v, p in waiting]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await worker.run(_image(3), "overflow")
        pipe.gate.set()
        return await first, await asyncio.gather(*rest)

    try:
        first, rest = asyncio.run(scenario())
    finally:
        worker.stop()
    assert [p for _, p in pipe.calls] == ["first", "a1", "a2", "b1", "b2"]  # same image back to back
    assert first.batch_size == 1
    assert [r.batch_size for r in rest] == [4, 4, 4, 4]
    assert sorted(r.batch_index for r in rest) == [0, 1, 2, 3]
    assert [r.result.text for r in rest] == ["answer to a1", "answer to b1", "answer to a2", "answer to b2"]
    assert worker.served == 5 and worker.largest_batch == 4


def test_model_error_is_a_500_with_request_id_and_the_server_keeps_serving():
    from fastapi.testclient import TestClient

    from lisa.serve.app import ServeSettings, create_app

    app = create_app(FakePipe(), ServeSettings(max_new_tokens=8))
    files = {"image": ("x.png", _png_bytes(_image(4)), "image/png")}
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v1/segment", files=files, data={"prompt": "boom"})
        assert r.status_code == 500
        body = r.json()["error"]
        assert body["code"] == "model_error"
        assert body["request_id"] == r.headers["x-request-id"] and body["request_id"] in body["message"]
        assert "secret" not in r.text and "Traceback" not in r.text
        ok = client.post("/v1/segment", files=files, data={"prompt": "fine"})
        assert ok.status_code == 200 and ok.json()["text"] == "answer to fine"
        assert ok.json()["masks"][0]["area"] == 5 * 8
        health = client.get("/health").json()
        assert health["failed"] == 1 and health["served"] == 1


def test_api_key_is_checked_in_process():
    from fastapi.testclient import TestClient

    from lisa.serve.app import ServeSettings, create_app

    app = create_app(FakePipe(), ServeSettings(api_key="s3cret"))
    files = {"image": ("x.png", _png_bytes(_image(4)), "image/png")}
    with TestClient(app) as client:
        assert client.post("/v1/segment", files=files, data={"prompt": "p"}).status_code == 401
        assert client.post("/v1/segment", files=files, data={"prompt": "p"},
                           headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/v1/segment", files=files, data={"prompt": "p"},
                           headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/health").status_code == 200


def test_serve_refuses_a_remote_bind_without_an_api_key(monkeypatch, capsys):
    from lisa.serve.cli import is_loopback, main

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    monkeypatch.delenv("LISA_API_KEY", raising=False)
    assert main(["--host", "0.0.0.0", "--version", "/nonexistent"]) == 2
    assert "without an API key" in capsys.readouterr().err


def test_serve_flags():
    from lisa.serve.cli import build_parser

    args = build_parser().parse_args([])
    assert (args.host, args.allow_remote, args.api_key) == ("127.0.0.1", False, None)
    args = build_parser().parse_args(["--load_in_8bit", "--precision", "bf16", "--max_queue", "3", "--max_batch", "2"])
    assert args.load_in_8bit and args.precision == "bf16" and (args.max_queue, args.max_batch) == (3, 2)


def test_a_served_request_hashes_its_image_once(tiny_ckpt, monkeypatch):
    """The worker groups a turn by the image's content key; the pipeline reuses that key."""
    from lisa.inference import pipeline as pipeline_module
    from lisa.inference.cache import image_key
    from lisa.inference.pipeline import LisaPipeline
    from lisa.serve import queue as queue_module

    calls = []

    def counting_key(arr):
        calls.append(arr.shape)
        return image_key(arr)

    monkeypatch.setattr(pipeline_module, "image_key", counting_key)
    monkeypatch.setattr(queue_module, "image_key", counting_key)
    pipe = LisaPipeline.from_pretrained(tiny_ckpt, device="cpu", max_new_tokens=3, progress=False)
    worker = ModelWorker(pipe)
    worker.start()
    try:
        first = asyncio.run(worker.run(_image(5), "Segment the square."))
        again = asyncio.run(worker.run(_image(5), "And the circle?"))
    finally:
        worker.stop()
    assert len(calls) == 2  # one per request
    assert not first.result.cache_hit and again.result.cache_hit  # the key found the cached encoding


def test_prompt_errors_are_told_apart_by_type():
    from lisa.inference.pipeline import PromptError

    class TooLong:
        lock = threading.RLock()

        def __call__(self, image, prompt, history=None, max_new_tokens=None, key=None):
            if prompt == "long":
                raise PromptError("over the context")
            raise ValueError("the prompt-like text of an internal error")

    from fastapi.testclient import TestClient

    from lisa.serve.app import ServeSettings, create_app

    with TestClient(create_app(TooLong(), ServeSettings())) as client:
        png = io.BytesIO()
        Image.fromarray(_image(1)).save(png, format="PNG")
        post = lambda prompt: client.post("/v1/segment", files={"image": ("x.png", png.getvalue(), "image/png")},  # noqa: E731
                                          data={"prompt": prompt})
        long, internal = post("long"), post("other")
    assert long.status_code == 422 and long.json()["error"]["code"] == "invalid_prompt"
    assert internal.status_code == 500 and "prompt-like" not in internal.text
