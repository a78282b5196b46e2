"""One ``lisa serve`` process with two models (a tiny LISA and a tiny plain LLaVA): the OpenAI client,
a client of LLaVA's controller/worker protocol, streaming, model choice and batched decoding.

The correct answers are the in-process pipeline's answers to the same input (the server's own
tests show that one request alone gets exactly those)."""

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from helpers.serving import boxed_image, data_url, lisa_and_llava_server, load_pipes, png, tiny_llava_ckpt
from lisa.conversation import get_template
from lisa.serve.masks import decode_rle

MAX_NEW = 10


def make_image(seed: int) -> np.ndarray:
    return boxed_image(seed, (44, 66), (8, 30, 12, 40), (250, 10, 10))


@pytest.fixture(scope="module")
def llava_ckpt(tmp_path_factory):
    return tiny_llava_ckpt(tmp_path_factory, "llava-v1.5")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(make_image(1)).save(folder / "one.png")
    return folder


@pytest.fixture(scope="module")
def server(seg_ckpt, llava_ckpt, image_dir):
    extra = ["--max_batch", "4", "--batch_wait_ms", "400", "--image_dir", str(image_dir)]
    with lisa_and_llava_server(seg_ckpt, llava_ckpt, MAX_NEW, *extra) as srv:
        yield srv


@pytest.fixture(scope="module")
def pipes(seg_ckpt, llava_ckpt):
    return load_pipes({"lisa": seg_ckpt, "llava": llava_ckpt}, MAX_NEW)


@pytest.fixture(scope="module")
def openai_client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def user_message(text, url):
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": parts}]


def test_models_health_and_model_choice(server):
    models = httpx.get(server.url + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["lisa", "llava"] and models["object"] == "list"
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and set(health["models"]) == {"lisa", "llava"}
    assert all(m["status"] == "ok" for m in health["models"].values())
    assert httpx.get(server.url + "/v1/model", params={"model": "llava"}).json()["has_seg_head"] is False
    assert httpx.get(server.url + "/v1/model").json()["has_seg_head"] is True  # the first model by default
    r = httpx.get(server.url + "/v1/model", params={"model": "nope"})
    assert r.status_code == 404 and "lisa, llava" in r.json()["error"]["message"]


def test_openai_client_with_an_image_streamed_and_not(openai_client, pipes, image_dir):
    img = make_image(1)
    prompt = "Please segment the red box."  # the tilted tiny model answers it with [SEG]s
    want = pipes["lisa"](img, prompt, max_new_tokens=8)
    r = openai_client.chat.completions.create(model="lisa", messages=user_message(prompt, data_url(img)), max_tokens=8)
    choice = r.choices[0]
    assert choice.message.content == want.text and choice.message.role == "assistant"
    assert choice.finish_reason == want.finish_reason and r.model == "lisa"
    masks = choice.model_extra["masks"]
    assert len(masks) == len(want.masks) >= 1  # generated [SEG]s (see seg_ckpt)
    np.testing.assert_array_equal(decode_rle(masks[0]["rle"]), want.masks[0])
    assert r.usage.completion_tokens == len(want.output_ids) and r.usage.prompt_tokens > 0

    stream = openai_client.chat.completions.create(model="lisa", messages=user_message(prompt, data_url(img)),
                                                   max_tokens=8, stream=True)
    pieces, last = [], None
    for chunk in stream:
        pieces.append(chunk.choices[0].delta.content or "")
        last = chunk
    assert "".join(pieces) == want.text and len([p for p in pieces if p]) > 1
    assert last.choices[0].finish_reason == want.finish_reason
    np.testing.assert_array_equal(decode_rle(last.choices[0].model_extra["masks"][0]["rle"]), want.masks[0])

    # a file in the server's --image_dir, by path and by file:// URL: the same answer
    for url in ("one.png", f"file://{image_dir / 'one.png'}"):
        r = openai_client.chat.completions.create(model="lisa", messages=user_message(prompt, url), max_tokens=8)
        assert r.choices[0].message.content == want.text

    # a plain LLaVA model answers the same way, with no masks; a follow-up turn carries the history
    llava = pipes["llava"](img, "Describe the image.", max_new_tokens=8)
    r = openai_client.chat.completions.create(model="llava", messages=user_message("Describe the image.",
                                                                                  data_url(img)), max_tokens=8)
    assert r.choices[0].message.content == llava.text and r.choices[0].model_extra["masks"] == []
    turns = user_message("Describe the image.", data_url(img)) + [
        {"role": "assistant", "content": llava.text}, {"role": "user", "content": "And the colours?"}]
    r = openai_client.chat.completions.create(model="llava", messages=turns, max_tokens=8)
    follow = pipes["llava"](img, "And the colours?", history=[("Describe the image.", llava.text)], max_new_tokens=8)
    assert r.choices[0].message.content == follow.text


@pytest.mark.parametrize("messages, status, needle", [
    (user_message("x", "../secret.png"), 403, "outside"),
    (user_message("x", "/etc/passwd"), 403, "outside"),
    (user_message("x", "https://example.com/a.png"), 422, "remote URLs"),
    (user_message("x", "data:image/png;base64,AAAA"), 400, "image"),
    ([{"role": "user", "content": "no image here"}], 422, "exactly one image"),
    ([{"role": "system", "content": "be brief"}] + user_message("x", "one.png"), 422, "system"),
])
def test_openai_bad_requests_say_why(openai_client, messages, status, needle):
    import openai

    with pytest.raises(openai.APIStatusError) as e:
        openai_client.chat.completions.create(model="lisa", messages=messages, max_tokens=4)
    assert e.value.status_code == status and needle in e.value.response.json()["error"]["message"]
    assert "Traceback" not in e.value.response.text


def read_chunks(response) -> list[dict]:
    """What LLaVA's clients do: split the body at NUL bytes as it arrives, one JSON object per chunk."""
    buffer, out = b"", []
    for data in response.iter_bytes():
        buffer += data
        *done, buffer = buffer.split(b"\0")
        out += [json.loads(c) for c in done if c]
    assert buffer == b""
    return out


def test_llava_protocol_client(server, pipes):
    base = server.url
    httpx.post(base + "/refresh_all_workers").raise_for_status()
    assert httpx.post(base + "/list_models").json() == {"models": ["lisa", "llava"]}
    assert httpx.post(base + "/get_worker_address", json={"model": "llava"}).json() == {"address": base}
    assert httpx.post(base + "/get_worker_address", json={"model": "other"}).json() == {"address": ""}
    status = httpx.post(base + "/worker_get_status").json()
    assert status["model_names"] == ["lisa", "llava"] and status["queue_length"] == 0
    assert httpx.post(base + "/register_worker", json={"worker_name": "w", "check_heart_beat": True}).status_code == 200
    assert httpx.post(base + "/receive_heart_beat", json={"worker_name": "w", "queue_length": 0}).json()["exist"]

    img = make_image(2)
    conv = get_template("llava_v1")
    conv.append_user("<image>\nWhat is red here?")
    conv.append_assistant(None)
    prompt = conv.get_prompt()
    params = {"model": "llava", "prompt": prompt, "images": [base64.b64encode(png(img)).decode()],
              "temperature": 0.0, "top_p": 0.7, "max_new_tokens": 8, "stop": "</s>"}
    with httpx.stream("POST", base + "/worker_generate_stream", json=params, timeout=60) as r:
        chunks = read_chunks(r)
    assert len(chunks) > 2 and all(c["error_code"] == 0 for c in chunks)
    texts = [c["text"] for c in chunks]
    assert all(t.startswith(prompt) for t in texts)
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # cumulative
    assert texts[-1][len(prompt):].strip() == pipes["llava"](img, "What is red here?", max_new_tokens=8).text

    bad = {**params, "images": [base64.b64encode(b"not an image").decode()]}
    with httpx.stream("POST", base + "/worker_generate_stream", json=bad) as r:
        (chunk,) = read_chunks(r)
    assert chunk["error_code"] != 0 and "image" in chunk["text"] and "Traceback" not in chunk["text"]
    too_long = {**params, "prompt": prompt.replace("What", "What " * 30000)}
    with httpx.stream("POST", base + "/worker_generate_stream", json=too_long) as r:
        (chunk,) = read_chunks(r)
    assert chunk["error_code"] != 0 and "too long" in chunk["text"]


def test_native_chat_streams_text_then_the_answer(server, pipes):
    img = make_image(3)
    messages = [{"role": "user", "content": "Segment it [SEG]"}]
    body = {"image": base64.b64encode(png(img)).decode(), "messages": messages, "model": "lisa"}
    plain = httpx.post(server.url + "/v1/chat", json=body, timeout=60).json()
    events = []
    with httpx.stream("POST", server.url + "/v1/chat", params={"stream": "true"}, json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for block in r.read().decode().split("\n\n"):
            if block.strip():
                kind, data = block.split("\n", 1)
                events.append((kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "answer" and set(kinds[:-1]) == {"text"}
    answer = events[-1][1]
    assert "".join(e["text"] for k, e in events[:-1]) == answer["text"] == plain["text"]
    assert [m["rle"] for m in answer["masks"]] == [m["rle"] for m in plain["masks"]]
    assert plain["text"] == pipes["lisa"](img, "Segment it [SEG]").text


def test_concurrent_requests_are_decoded_together_with_the_same_answers(server, pipes):
    images = [make_image(10 + i) for i in range(4)]
    prompts = ["Segment the box [SEG].", "What colour is it?", "hi", "Where is the red square in this picture?"]

    def ask(i):
        files = {"image": ("i.png", png(images[i]), "image/png")}
        return httpx.post(server.url + "/v1/segment", files=files, data={"prompt": prompts[i]}, timeout=60).json()

    time.sleep(0.5)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(ask, range(4)))
    assert max(r["batch"]["size"] for r in replies) > 1  # decoded in one batch
    for i, r in enumerate(replies):
        want = pipes["lisa"](images[i], prompts[i])
        assert r["text"] == want.text and len(r["masks"]) == len(want.masks)
