"""``lisa serve --replicas`` on a local Ray Serve instance: one cluster for the whole module.

Model ``a`` (tiny LISA, 2 replicas) and model ``b`` (tiny plain LLaVA, 1 replica, a queue of 1)
are served at once. The answers equal the in-process pipeline's (which the one-process server's
tests show it answers); both replicas answer; OpenAI and LLaVA-protocol requests go through; a full
queue answers 503 + Retry-After; a killed replica is replaced while requests keep being answered;
SIGTERM leaves no Ray process behind. Skipped when Ray is not installed (``make test`` installs it).
"""

import base64
import json
import os
import re
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from helpers.server import ServerProcess
from helpers.serving import boxed_image, data_url, load_pipes, png, tiny_llava_ckpt
from lisa.serve.masks import decode_rle

pytest.importorskip("ray.serve")
pytestmark = pytest.mark.slow
MAX_NEW = 8
MARK = secrets.token_hex(8)  # every process of this test's Ray instance inherits it in its environment


def make_image(seed: int) -> np.ndarray:
    return boxed_image(seed, (40, 60), (5, 25, 10, 40), (240, 20, 20))


def marked_processes() -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if f"LISA_TEST_MARK={MARK}".encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def llava_ckpt(tmp_path_factory):
    return tiny_llava_ckpt(tmp_path_factory)


@pytest.fixture(scope="module")
def cluster(seg_ckpt, llava_ckpt):
    # Ray's token authentication, with a token of this test's own (nothing written under ~/.ray)
    env = {"OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0", "LISA_TEST_MARK": MARK}
    args = ["--models", f"{seg_ckpt}:name=a,replicas=2", f"{llava_ckpt}:name=b,max_queue=1", "--replicas", "1",
            "--device", "cpu", "--max_new_tokens", "64", "--max_batch", "1", "--ray_cpus", "8", "--num_cpus", "1",
            "--log_level", "warning"]
    srv = ServerProcess("serve", args, env=env, timeout=300)
    try:
        srv.start().wait_ready()
        yield srv
    finally:
        srv.stop()
        srv.close()


@pytest.fixture(scope="module")
def pipes(seg_ckpt, llava_ckpt):
    return load_pipes({"a": seg_ckpt, "b": llava_ckpt}, MAX_NEW)


def segment(url, model, img, prompt, max_new=MAX_NEW, timeout=120):
    files = {"image": ("i.png", png(img), "image/png")}
    return httpx.post(url + "/v1/segment", files=files, timeout=timeout,
                      data={"prompt": prompt, "model": model, "max_new_tokens": str(max_new)})


def test_two_models_and_health(cluster):
    assert [m["id"] for m in httpx.get(cluster.url + "/v1/models").json()["data"]] == ["a", "b"]
    # Ray replaces a replica that dies while starting (seen under load); give it a bounded time to
    # settle: every replica running, and the status ok.
    want = {"a": {"RUNNING": 2}, "b": {"RUNNING": 1}}

    def settled(h):
        return h["status"] == "ok" and all(h["models"][m]["replicas"] == r for m, r in want.items())

    deadline = time.monotonic() + 120
    health = httpx.get(cluster.url + "/health").json()
    while not settled(health) and time.monotonic() < deadline:
        time.sleep(1)
        health = httpx.get(cluster.url + "/health").json()
    assert settled(health), health
    assert httpx.get(cluster.url + "/v1/model", params={"model": "b"}).json()["has_seg_head"] is False


def test_replicas_answer_as_the_pipeline_and_both_are_used(cluster, pipes):
    images = [make_image(i) for i in range(4)]
    prompts = ["Segment the red box [SEG].", "What is it?", "Where? [SEG]", "hi"]
    jobs = [(i, p) for i in range(4) for p in prompts[i:i + 2]] * 2
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda job: segment(cluster.url, "a", images[job[0]], job[1]), jobs))
    assert [r.status_code for r in replies] == [200] * len(jobs), replies[0].text
    for (i, p), r in zip(jobs, replies):
        want = pipes["a"](images[i], p)
        body = r.json()
        assert body["text"] == want.text and body["model"] == "a"
        assert len(body["masks"]) == len(want.masks)
        for got, mask in zip(body["masks"], want.masks):
            np.testing.assert_array_equal(decode_rle(got["rle"]), mask)
    assert len({r.headers["x-lisa-replica"] for r in replies}) == 2  # both replicas answered
    b = segment(cluster.url, "b", images[0], "Describe the image.").json()
    assert b["text"] == pipes["b"](images[0], "Describe the image.").text and b["masks"] == []


def test_openai_stream_and_llava_protocol_through_ray(cluster, pipes):
    img = make_image(7)
    url = data_url(img)
    body = {"model": "a", "max_tokens": MAX_NEW, "stream": True, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Segment it [SEG]"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    with httpx.stream("POST", cluster.url + "/v1/chat/completions", json=body, timeout=120) as r:
        lines = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == pipes["a"](img, "Segment it [SEG]").text
    assert chunks[-1]["choices"][0]["finish_reason"] and len(chunks[-1]["choices"][0]["masks"]) >= 1

    prompt = "USER: <image>\nDescribe the image. ASSISTANT:"
    params = {"model": "b", "prompt": prompt, "images": [base64.b64encode(png(img)).decode()],
              "temperature": 0, "max_new_tokens": MAX_NEW}
    assert httpx.post(cluster.url + "/get_worker_address", json={"model": "b"}).json()["address"] == cluster.url
    with httpx.stream("POST", cluster.url + "/worker_generate_stream", json=params, timeout=120) as r:
        chunks = [json.loads(c) for c in r.read().split(b"\0") if c]
    assert chunks and all(c["error_code"] == 0 for c in chunks) and chunks[-1]["text"].startswith(prompt)


def test_a_full_queue_answers_503_with_retry_after(cluster):
    img = make_image(9)
    # b: one replica holding at most 2 requests (--max_batch 1) and 1 more waiting (max_queue=1)
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda _: segment(cluster.url, "b", img, "Describe it.", max_new=64), range(12)))
    codes = [r.status_code for r in replies]
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes
    busy = next(r for r in replies if r.status_code == 503)
    assert busy.json()["error"]["code"] == "queue_full" and int(busy.headers["retry-after"]) >= 1


def test_a_killed_replica_is_replaced_and_requests_keep_being_answered(cluster, pipes):
    img = make_image(11)
    want = pipes["a"](img, "Segment [SEG]").text
    with ThreadPoolExecutor(4) as pool:
        before = {r.headers["x-lisa-replica"]
                  for r in pool.map(lambda _: segment(cluster.url, "a", img, "Segment [SEG]"), range(8))}
    victim = httpx.get(cluster.url + "/v1/model", params={"model": "a"}).json()
    os.kill(victim["pid"], signal.SIGKILL)
    deadline, seen = time.monotonic() + 120, set()
    while time.monotonic() < deadline:
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda _: segment(cluster.url, "a", img, "Segment [SEG]"), range(4)))
        assert [r.status_code for r in replies] == [200] * 4, [r.text for r in replies]
        assert all(r.json()["text"] == want for r in replies)
        seen |= {r.headers["x-lisa-replica"] for r in replies}
        if seen - before:
            break
        time.sleep(1)
    assert victim["replica"] not in seen and seen - before, "no new replica took over"
    health = httpx.get(cluster.url + "/health").json()
    assert health["models"]["a"]["replicas"].get("RUNNING") == 2


def test_an_application_joining_the_cluster_leaves_it_running(cluster, seg_ckpt):
    gcs = re.search(r"Ray cluster at (\S+)", cluster.log_tail(10**7)).group(1)
    args = ["--address", gcs, "--models", f"{seg_ckpt}:name=c", "--device", "cpu", "--max_new_tokens", "8",
            "--app_name", "second", "--route_prefix", "/second", "--log_level", "warning"]
    # Ray Serve's HTTP port is the cluster's: the second application is mounted at /second on it
    with ServerProcess("serve", args, ready_path="/second/health", port=cluster.port, env=cluster.env,
                       timeout=300) as second:
        assert [m["id"] for m in httpx.get(cluster.url + "/second/v1/models").json()["data"]] == ["c"]
        r = segment(cluster.url + "/second", "c", make_image(3), "Segment [SEG]")
        assert r.status_code == 200 and r.json()["model"] == "c"
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(60) == 0
    assert httpx.get(cluster.url + "/second/v1/models").status_code == 404  # its application is gone
    assert httpx.get(cluster.url + "/health").json()["status"] == "ok"  # the cluster and the first one are not


def test_sigterm_stops_the_ray_instance_it_started(cluster):
    assert len(marked_processes()) > 3  # the server, Ray's own processes and the replicas
    cluster.proc.send_signal(signal.SIGTERM)
    assert cluster.proc.wait(60) == 0
    deadline = time.monotonic() + 30
    while marked_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert marked_processes() == []
