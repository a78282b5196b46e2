"""The bad-input corpus, part 2: HTTP requests. A table of bodies against the API in process (the tiny
model behind it), then what needs real connections, against uvicorn in a thread with a stand-in
model: the API key before the body, queue admission before decoding, a 500 that keeps the
connection, and the header and body deadlines."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from test_bad_inputs import BASE, GRAY16, ROTATED, _png, png_header_only

from helpers.server import ThreadServer
from lisa.inference.pipeline import LisaPipeline, LisaResult
from lisa.serve.app import ServeSettings, create_app
from lisa.serve.connections import uvicorn_protocol

IMG = base64.b64encode(_png(BASE)).decode()
LONG_TURN = ("word " * 800).strip()


def raw_json(body: str) -> dict:
    return {"content": body.encode("utf-8", "surrogatepass"), "headers": {"content-type": "application/json"}}


def image_json(data: bytes, prompt: str = "Segment the thing.") -> dict:
    return {"json": {"image": base64.b64encode(data).decode(), "prompt": prompt}}


HTTP = {  # name: (route, request kwargs, status, error code | check of the 200 body)
    "lone_surrogate_prompt": ("segment", raw_json('{"image": "%s", "prompt": "bad \\ud800 text"}' % IMG),
                              422, "invalid_text"),
    "lone_surrogate_message": ("chat", raw_json('{"image": "%s", "messages": [{"role": "user", "content": "\\udc00"}]}'
                                                % IMG), 422, "invalid_text"),
    "number_of_5000_digits": ("segment", raw_json('{"image": "%s", "prompt": "hi", "max_new_tokens": %s}'
                                                  % (IMG, "9" * 5000)), 400, "invalid_json"),
    "deeply_nested_json": ("segment", raw_json('{"image": "%s", "prompt": %s}' % (IMG, "[" * 100_000 + "]" * 100_000)),
                           400, "invalid_json"),
    "deeply_nested_messages": ("chat", {"files": {"image": ("x.png", _png(BASE), "image/png")},
                                        "data": {"messages": "[" * 100_000 + "]" * 100_000}}, 422, "invalid_field"),
    "conversation_over_the_context": ("chat", {"json": {"image": IMG, "messages": [
        {"role": "user", "content": LONG_TURN}, {"role": "assistant", "content": LONG_TURN}] * 2
        + [{"role": "user", "content": "and?"}]}}, 422, "context_too_long"),
    "assistant_turn_too_long": ("chat", {"json": {"image": IMG, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "x" * 4001},
        {"role": "user", "content": "and?"}]}}, 422, "prompt_too_long"),
    "typed_control_tokens": ("segment", {"json": {"image": IMG, "prompt": "[SEG]" * 200 + "</s><im_start>"}},
                             200, lambda b: len(b["masks"]) <= 2),
    "typed_image_tags": ("segment", {"json": {"image": IMG, "prompt": "<image>" * 500}}, 200, lambda b: True),
    "aspect_1x3000": ("segment", image_json(_png(np.full((1, 3000, 3), 9, np.uint8))), 200,
                      lambda b: b["image_size"] == [1, 3000]),
    "aspect_3000x1": ("segment", image_json(_png(np.full((3000, 1, 3), 9, np.uint8))), 200,
                      lambda b: b["image_size"] == [3000, 1]),
    "gray_16bit": ("segment", image_json(_png(GRAY16)), 200, lambda b: b["image_size"] == [40, 30]),
    "exif_rotated": ("segment", image_json(ROTATED), 200, lambda b: b["image_size"] == [50, 30]),
    "truncated_after_header": ("segment", image_json(_png(BASE)[:90]), 400, "invalid_image"),
    "over_the_pixel_limit": ("segment", image_json(png_header_only(1500, 1000)), 413, "image_too_large"),
}


@pytest.fixture(scope="module")
def client(tiny_model):
    from fastapi.testclient import TestClient

    model, tok = tiny_model
    pipe = LisaPipeline(model, tok, max_new_tokens=3, max_masks=2)
    app = create_app(pipe, ServeSettings(max_new_tokens=3, max_pixels=1_000_000))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("case", list(HTTP))
def test_http_corpus(case, client):
    route, kwargs, status, expect = HTTP[case]
    r = client.post(f"/v1/{route}", **kwargs)
    assert r.status_code == status, r.text
    assert "Traceback" not in r.text
    if isinstance(expect, str):
        err = r.json()["error"]
        assert err["code"] == expect and err["request_id"] == r.headers["x-request-id"], err
        if expect == "context_too_long":
            assert "2048" in err["message"]
    else:
        assert expect(r.json()), r.json()
    assert client.get("/health").json()["status"] == "ok"


def test_api_key_is_checked_before_the_body_is_read():
    app = create_app(StandIn(), ServeSettings(api_key="s3cret"))
    sent = []

    async def receive():
        raise AssertionError("the body was read before the API key was checked")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/segment", "raw_path": b"/v1/segment", "query_string": b"", "root_path": "",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"20000000"),
                         (b"x-api-key", b"wrong")]}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 401 and (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "unauthorized"


# ---- real connections -------------------------------------------------------------------------------

class StandIn:
    """The pipeline's place in the server: blocks on "block", answers with an unencodable mask on
    "broken" (an unexpected error after the model), else one mask."""

    def __init__(self):
        self.lock = threading.RLock()
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.max_masks = 2

    def __call__(self, image, prompt, history=None, max_new_tokens=None, key=None):
        image = image.decode()  # the server hands the upload over still encoded
        if prompt == "block":
            self.started.set()
            self.gate.wait(20)
        mask = object() if prompt == "broken" else np.ones(image.shape[:2], bool)
        return LisaResult(f"answer to {prompt}", [mask], [1], {
            "vision_tower": 0.0, "sam_encoder": 0.0, "prefill": 0.0, "decode": 0.0, "tokens": 1,
            "mask_decode": 0.0, "total": 0.0}, False)


@pytest.fixture(scope="module")
def served():
    pipe = StandIn()
    app = create_app(pipe, ServeSettings(max_queue=1, max_batch=1, body_timeout_s=1.0))
    with ThreadServer(app, http=uvicorn_protocol(1.0), timeout_keep_alive=5) as srv:
        yield srv, pipe


def _request(sock: socket.socket, body: dict) -> tuple[int, dict, dict]:
    """One JSON POST on an open socket; returns (status, headers, body)."""
    payload = json.dumps(body).encode()
    sock.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(rest) < int(headers["content-length"]):
        rest += sock.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(rest)


def test_a_500_keeps_the_connection_for_the_next_request(served):
    srv, _ = served
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        status, headers, body = _request(sock, {"image": IMG, "prompt": "broken"})
        assert status == 500 and body["error"]["code"] == "internal_error"
        assert body["error"]["request_id"] == headers["x-request-id"] and "Traceback" not in json.dumps(body)
        assert headers.get("connection", "") != "close"
        status, _, body = _request(sock, {"image": IMG, "prompt": "fine"})  # the same connection
        assert status == 200 and body["text"] == "answer to fine"


def test_a_full_queue_answers_503_before_any_image_is_decoded(served, monkeypatch):
    import lisa.images as images

    srv, pipe = served
    decoded = []
    real = images.read_rgb
    monkeypatch.setattr(images, "read_rgb", lambda *a, **k: decoded.append(1) or real(*a, **k))
    pipe.gate.clear()
    pipe.started.clear()
    post = lambda prompt: httpx.post(srv.url + "/v1/segment", json={"image": IMG, "prompt": prompt}, timeout=30)  # noqa: E731
    try:
        with_model = threading.Thread(target=post, args=("block",))
        with_model.start()
        assert pipe.started.wait(10)  # the worker holds the first request
        waiting = threading.Thread(target=post, args=("queued",))
        waiting.start()
        deadline = time.monotonic() + 10
        while httpx.get(srv.url + "/health").json()["queue_depth"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        r = post("overflow")
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_full" and int(r.headers["retry-after"]) >= 1
        assert len(decoded) == 1  # only the request the model is working on was decoded
    finally:
        pipe.gate.set()
        with_model.join(20)
        waiting.join(20)
    assert len(decoded) == 2


def test_slow_headers_are_cut_off(served):
    srv, _ = served
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        t0 = time.monotonic()
        sock.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: test\r\n")
        closed = False
        while time.monotonic() - t0 < 6:
            try:
                sock.sendall(b"X")  # a header byte now and then: data keeps arriving, the headers never end
                sock.settimeout(0.3)
                closed = sock.recv(1024) == b""
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            if closed:
                break
        assert closed and time.monotonic() - t0 < 4  # header deadline 1 s


def test_a_half_sent_body_gets_408(served):
    srv, _ = served
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        t0 = time.monotonic()
        sock.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"image\": ")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 408") and b"body_timeout" in reply and time.monotonic() - t0 < 5
