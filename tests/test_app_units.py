"""The app's request handler in process, with the tiny model: masks, multi-turn state, escaping, refusals."""

import numpy as np
import pytest
from PIL import Image

from lisa.demo.examples import shapes_examples
from lisa.inference.visualize import overlay_all
from lisa.webui.ui import SegmentApp, render_conversation


@pytest.fixture(scope="module")
def pipe(seg_ckpt):
    from lisa.inference.pipeline import LisaPipeline

    return LisaPipeline.from_pretrained(seg_ckpt, device="cpu", max_new_tokens=6, progress=False)


def test_respond_gives_overlay_mask_files_and_multi_turn(pipe, rgb_image, tmp_path):
    app = SegmentApp(pipe, max_prompt_chars=200, work_dir=tmp_path)
    prompt = "Segment <b>this</b> & that [SEG] — 日本語"
    overlay, files, answer, convo, timing, status, state = app.respond(rgb_image, prompt, None)
    expected = pipe(rgb_image, prompt)
    assert answer == expected.text and status == ""
    assert len(files) == len(expected.masks) >= 1  # masks of generated [SEG]s (the typed one is text)
    saved = np.asarray(Image.open(files[0])) > 0
    np.testing.assert_array_equal(saved, expected.masks[0])
    assert overlay.shape == rgb_image.shape
    changed = np.any(overlay != rgb_image, axis=-1)
    assert changed.any() and not changed[~np.logical_or.reduce(expected.masks)].any()
    np.testing.assert_array_equal(overlay, overlay_all(rgb_image, expected.masks))
    assert "&lt;b&gt;this&lt;/b&gt; &amp; that [SEG] — 日本語" in convo and "<b>this</b>" not in convo
    assert "total" in timing and f"{len(expected.masks)} mask(s)" in timing

    # second turn, same image: history kept, the encoding reused, the first turn's mask not repeated
    overlay2, files2, answer2, convo2, timing2, _, state2 = app.respond(rgb_image, "and now?", state)
    assert state2["history"] == [(prompt, answer), ("and now?", answer2)]
    assert answer2 == pipe(rgb_image, "and now?", history=[(prompt, answer)]).text
    assert "image encoding reused" in timing2
    assert convo2.count("lisa-user") == 2
    assert len(files2 or []) == answer2.count("[SEG]")

    # a different image starts a new conversation
    other = np.ascontiguousarray(rgb_image[::-1])
    *_, state3 = app.respond(other, "hello", state2)
    assert [u for u, _ in state3["history"]] == ["hello"]


def test_respond_refuses_with_visible_messages(pipe, rgb_image, tmp_path):
    app = SegmentApp(pipe, max_prompt_chars=50, work_dir=tmp_path, max_pixels=100 * 100)
    state = {"key": None, "history": []}
    calls_before = pipe.cache.hits + pipe.cache.misses
    big = np.zeros((101, 100, 3), np.uint8)
    for image, prompt, expect in [(None, "hi", "Upload an image"), (rgb_image, "  ", "Type an instruction"),
                                  (rgb_image, "ü" * 51, "51 characters, the limit is 50"),
                                  (big, "hi", "100x101 pixels, more than the limit of 10000")]:
        overlay, files, answer, _, _, status, new_state = app.respond(image, prompt, state)
        assert expect in status and overlay is None and files is None and answer == ""
        assert new_state == state
    assert pipe.cache.hits + pipe.cache.misses == calls_before  # the model was never called


def test_render_conversation_escapes_everything():
    out = render_conversation([("<script>alert(1)</script>", "a < b & \"c\"")])
    assert "<script>" not in out and "&lt;script&gt;" in out and "a &lt; b &amp; &quot;c&quot;" in out


def test_shapes_examples_are_images_with_prompts(tmp_path):
    rows = shapes_examples(tmp_path, n=2)
    assert len(rows) >= 2
    for path, prompt in rows:
        with Image.open(path) as img:
            assert img.mode == "RGB" and min(img.size) > 32
        assert prompt.strip() and prompt[0].isupper()


def test_app_flags_match_chat_and_default_to_loopback():
    from lisa.webui.cli import build_parser

    args = build_parser().parse_args([])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)
    args = build_parser().parse_args(["--version", "m", "--load_in_4bit", "--precision", "fp16", "--device", "cpu",
                                      "--share", "--port", "9000"])
    assert args.load_in_4bit and not args.load_in_8bit and args.precision == "fp16" and args.device == "cpu"
    assert args.share and args.port == 9000


def test_examples_come_from_the_model_folder(tmp_path):
    import json
    from pathlib import Path

    from lisa.inference.examples import model_examples, write_examples

    model = tmp_path / "model"
    model.mkdir()
    assert model_examples(model) == []  # a folder without examples.json has none
    rows = shapes_examples(tmp_path / "shapes", n=1)
    write_examples(model, rows)
    got = model_examples(model)
    assert [p for _, p in got] == [p for _, p in rows]
    assert all(str(model.resolve()) in path and Path(path).is_file() for path, _ in got)
    (tmp_path / "outside.png").write_bytes(b"x")
    entries = json.loads((model / "examples.json").read_text())
    entries.append({"image": "../outside.png", "prompt": "Not from this folder."})
    (model / "examples.json").write_text(json.dumps(entries))
    assert len(model_examples(model)) == len(rows)  # nothing outside the model folder is offered
    (model / "examples.json").write_text('[{"image": 3}]')
    with pytest.raises(ValueError, match="examples.json: entry 0 needs an 'image' and a 'prompt'"):
        model_examples(model)
