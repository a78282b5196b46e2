"""``lisa app`` launched for real (tiny model) and driven through gradio_client, plus a headless-browser check."""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from helpers.server import ServerProcess

MAX_NEW = 6
TITLE = "LISA: reasoning segmentation"


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def app_server(seg_ckpt, tmp_path_factory):
    from lisa.demo.examples import shapes_examples
    from lisa.inference.examples import write_examples

    # a model folder that carries example queries (examples.json), as the demo's does
    model = tmp_path_factory.mktemp("app") / "model"
    shutil.copytree(seg_ckpt, model)
    write_examples(model, shapes_examples(tmp_path_factory.mktemp("examples")))
    env = {"OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with ServerProcess("app", ["--version", str(model), "--device", "cpu", "--max_new_tokens", str(MAX_NEW),
                               "--max_prompt_chars", "120"], ready_path="/", env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def pipe(seg_ckpt):
    from lisa.inference.pipeline import LisaPipeline

    return LisaPipeline.from_pretrained(seg_ckpt, device="cpu", max_new_tokens=MAX_NEW, progress=False)


def test_gradio_client_segments_and_continues_the_conversation(app_server, pipe, tmp_path):
    from gradio_client import Client, handle_file

    rng = np.random.default_rng(3)
    arr = rng.integers(0, 255, size=(70, 110, 3), dtype=np.uint8)
    path = tmp_path / "input.png"
    Image.fromarray(arr).save(path)
    client = Client(app_server.url, verbose=False, download_files=str(tmp_path / "dl"))

    prompt = "Où est la <i>boîte</i>? [SEG] 🙂"
    overlay, files, answer, convo, timing, status = client.predict(handle_file(str(path)), prompt,
                                                                   api_name="/segment")
    expected = pipe(arr, prompt)
    assert answer == expected.text and status == ""
    out = np.asarray(Image.open(overlay).convert("RGB"))
    assert out.shape == arr.shape
    assert len(files) == len(expected.masks) >= 1
    np.testing.assert_array_equal(np.asarray(Image.open(files[0])) > 0, expected.masks[0])
    changed = np.any(out != arr, axis=-1)
    # the overlay lies exactly on the masks
    assert changed.any() and not changed[~np.logical_or.reduce(expected.masks)].any()
    assert "&lt;i&gt;boîte&lt;/i&gt;? [SEG] 🙂" in convo and "<i>" not in convo
    assert "total" in timing and "vision tower" in timing

    overlay2, files2, answer2, convo2, timing2, _ = client.predict(handle_file(str(path)), "And then?",
                                                                   api_name="/segment")
    assert answer2 == pipe(arr, "And then?", history=[(prompt, answer)]).text
    assert "image encoding reused" in timing2 and convo2.count("lisa-user") == 2

    *_, status = client.predict(handle_file(str(path)), "x" * 121, api_name="/segment")
    assert "too long" in status and "121" in status
    *_, status = client.predict(None, "hello", api_name="/segment")
    assert "Upload an image" in status
    reset = client.predict(api_name="/reset")
    assert "No conversation yet" in reset[3]


@pytest.mark.skipif(find_chromium() is None,
                    reason="chromium is not installed (.ci/run installs the Debian package `chromium`)")
def test_page_renders_in_headless_chromium(app_server, tmp_path):
    chromium = find_chromium()
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--window-size=1280,900", "--virtual-time-budget=15000"]
    shot = tmp_path / "page.png"
    subprocess.run(flags + [f"--user-data-dir={tmp_path / 'p1'}", f"--screenshot={shot}", app_server.url + "/"],
                   check=True, timeout=120, capture_output=True)
    dom = subprocess.run(flags + [f"--user-data-dir={tmp_path / 'p2'}", "--dump-dom", app_server.url + "/"],
                         check=True, timeout=120, capture_output=True, text=True).stdout
    assert TITLE in dom
    assert "Instruction" in dom and "Segment" in dom and "shapes_0.png" in dom  # components and examples
    img = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert img.shape[:2] == (900, 1280)
    assert img.std() > 10  # not a blank page
    # the primary button colour of the default theme is there: the app's styles were applied
    orange = (np.abs(img - np.array([249, 115, 22])).sum(-1) < 40).sum()
    assert orange > 2000
    colours = len(np.unique(img.reshape(-1, 3), axis=0))
    assert colours > 50
