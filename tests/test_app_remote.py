"""``lisa app --server URL``: the web UI as a client of a running ``lisa serve`` (two tiny models),
driven in process (streamed updates) and in a real headless Chromium (upload, type, click, read)."""

import json

import numpy as np
import pytest
from PIL import Image

from helpers.browser import Browser, find_chromium
from helpers.server import ServerProcess
from helpers.serving import boxed_image, lisa_and_llava_server, load_pipes, tiny_llava_ckpt

MAX_NEW = 8


@pytest.fixture(scope="module")
def llava_ckpt(tmp_path_factory):
    return tiny_llava_ckpt(tmp_path_factory)


@pytest.fixture(scope="module")
def server(seg_ckpt, llava_ckpt):
    with lisa_and_llava_server(seg_ckpt, llava_ckpt, MAX_NEW) as srv:
        yield srv


@pytest.fixture(scope="module")
def pipes(seg_ckpt, llava_ckpt):
    return load_pipes({"lisa": seg_ckpt, "llava": llava_ckpt}, MAX_NEW)


def make_image(seed=4):
    return boxed_image(seed, (60, 90), (10, 40, 20, 60), (230, 30, 30))


def test_remote_app_streams_the_answer_then_the_masks(server, pipes, tmp_path):
    from lisa.webui.remote import RemoteSegmentApp, list_models

    models = list_models(server.url)
    assert models == ["lisa", "llava"]
    app = RemoteSegmentApp(server.url, models, work_dir=tmp_path / "masks")
    img = make_image()
    prompt = "Segment the red box [SEG]"
    updates = list(app.respond(img, prompt, "lisa", None))
    want = pipes["lisa"](img, prompt)
    answers = [u[2] for u in updates]
    assert len(updates) > 2 and answers[-1] == want.text
    assert all(b.startswith(a) for a, b in zip(answers, answers[1:]))  # the text grows as it streams
    overlay, files, _, convo, timing, status, state = updates[-1]
    assert len(files) == len(want.masks) >= 1 and "lisa" in timing and status == ""
    np.testing.assert_array_equal(np.asarray(Image.open(files[0])) > 0, want.masks[0])
    assert overlay.shape == img.shape and state["history"] == [(prompt, want.text)]

    second = list(app.respond(img, "And then?", "lisa", state))[-1]
    assert second[2] == pipes["lisa"](img, "And then?", history=[(prompt, want.text)]).text
    other = list(app.respond(img, "Describe it.", "llava", second[-1]))[-1]  # another model: a new conversation
    assert other[2] == pipes["llava"](img, "Describe it.").text and other[-1]["history"] == [("Describe it.", other[2])]
    assert "Upload an image" in list(app.respond(None, "x", "lisa", None))[-1][5]


@pytest.mark.skipif(find_chromium() is None,
                    reason="chromium is not installed (.ci/run installs the Debian package `chromium`)")
def test_app_with_server_in_headless_chromium(server, pipes, tmp_path):
    pytest.importorskip("websockets")
    img = make_image(5)
    path = tmp_path / "input.png"
    Image.fromarray(img).save(path)
    prompt = "Where is the red box? [SEG]"
    want = pipes["lisa"](img, prompt).text
    env = {"GRADIO_ANALYTICS_ENABLED": "False"}
    with ServerProcess("app", ["--server", server.url], ready_path="/", env=env) as app, Browser() as browser:
        page = browser.open(app.url + "/")
        page.wait_for("document.querySelector('#lisa-prompt textarea') !== null")
        assert page.eval("document.querySelector('#lisa-model input').value") == "lisa"
        page.set_files("#lisa-image input[type=file]", [str(path)])
        page.wait_for("document.querySelector('#lisa-image img') !== null")
        page.type_into("#lisa-prompt textarea", prompt)
        page.click("#lisa-submit")
        got = page.wait_for(f"(() => {{ const v = document.querySelector('#lisa-answer textarea').value; "
                            f"return v === {json.dumps(want)} ? v : null; }})()", timeout=90)
        assert got == want
        page.wait_for("document.querySelector('#lisa-overlay img') !== null")
        page.screenshot(tmp_path / "page.png")
    shot = np.asarray(Image.open(tmp_path / "page.png").convert("RGB"))
    assert shot.std() > 10
