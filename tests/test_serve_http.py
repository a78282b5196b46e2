"""HTTP tests against real ``lisa serve`` processes on 127.0.0.1 with the tiny model.

Server A (roomy queue, small limits) answers the happy paths, the bad inputs and 50 concurrent
requests; server B (queue of 1, API key) shows 503 + Retry-After and the key check. Both start in
parallel once per module. The tiny model's answers are random text; its [SEG] output row is tilted
so answers hold generated [SEG]s (see ``seg_ckpt``), so mask paths are exercised too (a typed
``[SEG]`` is only text). Correct answers are the in-process pipeline's answers for the same input.
"""

import base64
import io
import json
import socket
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from helpers.server import ServerProcess
from lisa.serve.masks import decode_png, decode_rle

MAX_NEW = 8
API_KEY = "test-key-123"


def png(arr, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def make_image(seed: int, shape=(48, 72)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(*shape, 3), dtype=np.uint8)
    img[10:30, 20 + seed: 50] = (255, 0, 0)
    return img


@pytest.fixture(scope="module")
def servers(seg_ckpt):
    env = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    common = ["--version", str(seg_ckpt), "--device", "cpu", "--log_level", "warning"]
    a = ServerProcess("serve", common + ["--max_new_tokens", str(MAX_NEW), "--max_queue", "64", "--max_batch", "4",
                                         "--max_body_mb", "1", "--max_pixels", "1000000", "--max_prompt_chars", "300"],
                      env=env)
    b = ServerProcess("serve", common + ["--max_new_tokens", "64", "--max_queue", "1", "--max_batch", "1"],
                      env={**env, "LISA_API_KEY": API_KEY})
    try:
        a.start(), b.start()
        a.wait_ready(), b.wait_ready()
        yield a, b
    finally:
        a.close(), b.close()


@pytest.fixture(scope="module")
def server(servers):
    return servers[0]


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def pipe(seg_ckpt):
    from lisa.inference.pipeline import LisaPipeline

    return LisaPipeline.from_pretrained(seg_ckpt, device="cpu", max_new_tokens=MAX_NEW, progress=False)


def post_segment(client, img, prompt, **params):
    return client.post("/v1/segment", params=params, files={"image": ("img.png", png(img), "image/png")},
                       data={"prompt": prompt})


def assert_error(r, status, code):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    assert err["request_id"] == r.headers["x-request-id"]
    return err["message"]


def test_health_model_and_openapi(client, seg_ckpt):
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/v1/model").json()
    assert info["version"] == str(seg_ckpt)
    assert info["llm"]["model_type"] == "llama" and info["llm"]["num_hidden_layers"] == 2
    assert info["has_seg_head"] and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["max_new_tokens"] == MAX_NEW and info["batching"]["max_batch"] == 4
    schema = client.get("/openapi.json").json()
    assert {"/v1/segment", "/v1/chat", "/health", "/v1/model"} <= set(schema["paths"])
    body = schema["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert "SegmentJSON" in schema["components"]["schemas"]


def test_segment_multipart_matches_the_pipeline(client, pipe):
    img = make_image(0)
    prompt = "Can you segment the red box [SEG] in this image?"
    r = post_segment(client, img, prompt)
    assert r.status_code == 200, r.text
    body = r.json()
    expected = pipe(img, prompt)
    assert body["text"] == expected.text
    assert body["image_size"] == [48, 72] and body["mask_format"] == "rle"
    assert len(body["masks"]) == len(expected.masks) >= 1
    for got, want in zip(body["masks"], expected.masks):
        mask = decode_rle(got["rle"])
        np.testing.assert_array_equal(mask, want)
        assert got["area"] == int(want.sum())
    t = body["timings"]
    assert t["tokens"] <= MAX_NEW and t["total"] >= t["model"] > 0
    # the same image again: its encoding comes from the cache
    again = post_segment(client, img, "and what else?").json()
    assert again["cache_hit"] is True and again["timings"]["vision_tower"] == 0.0
    assert again["text"] == pipe(img, "and what else?").text


def test_segment_json_with_png_masks_and_unicode(client, pipe):
    img = make_image(3)
    prompt = "Segmente l’objet rouge « ici » [SEG] — 赤い箱 🟥"
    r = client.post("/v1/segment", params={"mask_format": "png"},
                    json={"image": base64.b64encode(png(img)).decode(), "prompt": prompt})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = pipe(img, prompt)
    assert body["text"] == expected.text and len(body["masks"]) == len(expected.masks) >= 1
    for got, want in zip(body["masks"], expected.masks):
        assert "rle" not in got or got["rle"] is None
        np.testing.assert_array_equal(decode_png(got["png"]), want)
        x, y, w, h = got["bbox"]
        ys, xs = np.nonzero(want)
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_max_new_tokens_override_is_capped(client):
    img = make_image(2)
    r = client.post("/v1/segment", json={"image": base64.b64encode(png(img)).decode(), "prompt": "hi",
                                         "max_new_tokens": 2})
    assert r.status_code == 200 and r.json()["timings"]["tokens"] <= 2
    r = client.post("/v1/segment", json={"image": base64.b64encode(png(img)).decode(), "prompt": "hi",
                                         "max_new_tokens": MAX_NEW + 1})
    assert str(MAX_NEW) in assert_error(r, 422, "invalid_field")


def test_chat_answers_the_last_turn_with_only_its_masks(client, pipe):
    img = make_image(3)
    messages = [{"role": "user", "content": "Segment the box."}, {"role": "assistant", "content": "It is [SEG]."},
                {"role": "user", "content": "Now the other one [SEG]."}]
    r = client.post("/v1/chat", json={"image": base64.b64encode(png(img)).decode(), "messages": messages})
    assert r.status_code == 200, r.text
    body = r.json()
    history = [("Segment the box.", "It is [SEG].")]
    expected = pipe(img, "Now the other one [SEG].", history=history)
    assert body["text"] == expected.text
    assert len(expected.masks) == len(body["masks"]) >= 1  # the earlier turn's [SEG] is not answered again
    np.testing.assert_array_equal(decode_rle(body["masks"][0]["rle"]), expected.masks[0])
    multipart = client.post("/v1/chat", files={"image": ("x.png", png(img), "image/png")},
                            data={"messages": json.dumps(messages)})
    assert multipart.status_code == 200 and multipart.json()["text"] == body["text"]
    assert multipart.json()["cache_hit"] is True
    bad = client.post("/v1/chat", json={"image": base64.b64encode(png(img)).decode(), "messages": messages[:2]})
    assert_error(bad, 422, "invalid_field")


def _bomb_png(width, height) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _bad_requests():
    img = png(make_image(4))
    one_bit = png(np.zeros((1500, 1500), bool))  # 2.25 Mpixel but a few KB: over --max_pixels 1e6
    multipart = lambda data, prompt="hello": {"files": {"image": ("x.png", data, "image/png")},  # noqa: E731
                                              "data": {"prompt": prompt}}
    return {
        "body_too_large": (413, "body_too_large", multipart(img + b"\0" * 1_200_000)),
        "too_many_pixels": (413, "image_too_large", multipart(one_bit)),
        "bomb_header": (413, "image_too_large", multipart(_bomb_png(60_000, 60_000))),
        "not_an_image": (400, "invalid_image", multipart(b"GIF89a but not really")),
        "truncated_image": (400, "invalid_image", multipart(img[: len(img) // 2])),
        "empty_prompt": (422, "empty_prompt", multipart(img, "   \n")),
        "long_prompt": (422, "prompt_too_long", multipart(img, "é" * 301)),
        "missing_prompt": (422, "missing_field", {"files": {"image": ("x.png", img, "image/png")}}),
        "missing_image": (422, "missing_field", {"files": {"picture": ("x.png", img, "image/png")},
                                                 "data": {"prompt": "hi"}}),
        "text_plain": (415, "unsupported_media_type", {"content": b"hi", "headers": {"content-type": "text/plain"}}),
        "no_content_type": (415, "unsupported_media_type", {"content": b"hi"}),
        "bad_json": (400, "invalid_json", {"content": b'{"image": ', "headers": {"content-type": "application/json"}}),
        "json_missing_image": (422, "invalid_field", {"json": {"prompt": "hi"}}),
        "json_unknown_field": (422, "invalid_field", {"json": {"image": "", "prompt": "hi", "extra": 1}}),
        "bad_base64": (400, "invalid_base64", {"json": {"image": "@@not base64@@", "prompt": "hi"}}),
        "broken_multipart": (400, "invalid_multipart", {
            "content": b"--XYZ\r\nGarbage-header\r\n\r\nabc\r\n--XYZ--\r\n",
            "headers": {"content-type": "multipart/form-data; boundary=XYZ"}}),
        "multipart_without_boundary": (400, "invalid_multipart", {
            "content": b"abc", "headers": {"content-type": "multipart/form-data"}}),
        "bad_mask_format": (422, "invalid_field", {**multipart(img), "params": {"mask_format": "jpeg"}}),
    }


@pytest.mark.parametrize("case", list(_bad_requests()))
def test_bad_input_gets_a_clear_4xx_and_the_server_stays_healthy(client, case):
    status, code, kwargs = _bad_requests()[case]
    r = client.post("/v1/segment", **kwargs)
    message = assert_error(r, status, code)
    assert "Traceback" not in message and len(message) > 10
    assert client.get("/health").json()["status"] == "ok"


def test_malformed_http_and_unknown_routes(server, client):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GARBAGE \x00\xff NOT HTTP\r\n\r\n")
        reply = s.recv(1024)
    assert reply == b"" or reply.startswith(b"HTTP/1.1 400")
    assert_error(client.get("/v1/nothing"), 404, "http_error")
    assert_error(client.get("/v1/segment"), 405, "http_error")
    r = post_segment(client, make_image(5), "still there?")
    assert r.status_code == 200 and client.get("/health").json()["status"] == "ok"


def test_fifty_concurrent_requests_all_answered_correctly(client, server):
    images = [make_image(10 + i, shape=(40 + 4 * i, 64)) for i in range(5)]
    prompts = ["Segment the red box [SEG].", "What is in the picture?"]
    inputs = [(i, p) for i in range(len(images)) for p in prompts]
    single = {}
    for i, p in inputs:
        r = post_segment(client, images[i], p)
        assert r.status_code == 200, r.text
        single[(i, p)] = r.json()

    jobs = [inputs[k % len(inputs)] for k in range(50)]
    with httpx.Client(base_url=server.url, timeout=120,
                      limits=httpx.Limits(max_connections=50, max_keepalive_connections=50)) as c:
        with ThreadPoolExecutor(50) as pool:
            replies = list(pool.map(lambda job: post_segment(c, images[job[0]], job[1]), jobs))
    assert [r.status_code for r in replies] == [200] * 50, [r.text for r in replies if r.status_code != 200][:2]
    for job, r in zip(jobs, replies):
        got, want = r.json(), single[job]
        assert got["text"] == want["text"]
        assert [m["rle"] for m in got["masks"]] == [m["rle"] for m in want["masks"]]
        assert got["cache_hit"]  # every image was seen by the single requests
    assert len({r.json()["request_id"] for r in replies}) == 50
    info = client.get("/v1/model").json()
    assert info["batching"]["largest_batch"] > 1  # queued requests were taken several per turn
    assert max(r.json()["batch"]["size"] for r in replies) > 1


def test_full_queue_answers_503_with_retry_after(servers):
    b = servers[1]
    img = png(make_image(6))
    headers = {"Authorization": f"Bearer {API_KEY}"}

    def call(k):
        return httpx.post(b.url + "/v1/segment", files={"image": ("x.png", img, "image/png")},
                          data={"prompt": f"describe everything {k}"}, headers=headers, timeout=120)

    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(call, range(12)))
    codes = sorted(r.status_code for r in replies)
    assert set(codes) == {200, 503}, codes
    for r in replies:
        if r.status_code == 503:
            assert_error(r, 503, "queue_full")
            assert int(r.headers["retry-after"]) >= 1
    assert httpx.get(b.url + "/health").json()["status"] == "ok"


def test_api_key_is_required_when_set(servers):
    b = servers[1]
    files = {"image": ("x.png", png(make_image(7)), "image/png")}
    assert_error(httpx.post(b.url + "/v1/segment", files=files, data={"prompt": "hi"}), 401, "unauthorized")
    assert_error(httpx.get(b.url + "/v1/model", headers={"X-API-Key": "wrong"}), 401, "unauthorized")
    ok = httpx.post(b.url + "/v1/segment", files=files, data={"prompt": "hi", "max_new_tokens": "4"},
                    headers={"X-API-Key": API_KEY}, timeout=60)
    assert ok.status_code == 200 and ok.json()["timings"]["tokens"] <= 4
    assert httpx.get(b.url + "/health").status_code == 200  # health stays open for probes
