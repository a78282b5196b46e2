"""`lisa chat` end to end: one-shot and interactive modes, mask files, JSON output, clear errors."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image
from test_model_generation import _force_seg_logits

from lisa.chat.cli import run_one
from lisa.inference.pipeline import LisaPipeline


def _lisa(*args, input_text=None):
    return subprocess.run([sys.executable, "-m", "lisa", *args], capture_output=True, text=True,
                          input=input_text, timeout=300)


def test_one_shot_writes_every_mask(tiny_model, rgb_image, tmp_path, capsys):
    model, tok = tiny_model
    pipe = LisaPipeline(model, tok, max_new_tokens=9)
    path = tmp_path / "example1.jpg"
    Image.fromarray(rgb_image).save(path)
    restore = _force_seg_logits(model, every=3)
    try:
        report = run_one(pipe, str(path), "Where is the red box?", str(tmp_path / "vis"), as_json=True)
    finally:
        restore()
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["text"] == report["text"] and "[SEG]" in report["text"]
    n = len(report["mask_areas"])
    assert n >= 2
    names = sorted(p.name for p in (tmp_path / "vis").iterdir())
    assert names == sorted([f"example1_mask_{i}.jpg" for i in range(n)]
                           + [f"example1_masked_img_{i}.jpg" for i in range(n)])
    mask = np.asarray(Image.open(tmp_path / "vis" / "example1_mask_0.jpg"))
    assert mask.shape == rgb_image.shape[:2]


def test_cli_one_shot_and_interactive(tiny_ckpt, rgb_image, tmp_path):
    img = tmp_path / "img.png"
    Image.fromarray(rgb_image).save(img)
    r = _lisa("chat", "--version", str(tiny_ckpt), "--image", str(img), "--prompt", "Segment the red box.",
              "--max_new_tokens", "6", "--json", "--vis_save_path", str(tmp_path / "vis"), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out) >= {"text", "mask_files", "mask_areas", "timings"}
    assert out["timings"]["tokens"] == 6
    # interactive: prompt, then image path; an empty image path reuses the previous image
    r = _lisa("chat", "--version", str(tiny_ckpt), "--max_new_tokens", "4", "--vis_save_path", str(tmp_path / "vis"),
              input_text=f"What is this?\n{img}\nAnd now?\n\nAgain\n{tmp_path / 'missing.jpg'}\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("text_output:") == 2
    assert "File not found in" in r.stdout


def test_cli_errors_are_clear(tiny_ckpt, tmp_path, capsys):
    import pytest

    from lisa.cli import main

    assert main(["chat", "--version", str(tmp_path / "nope"), "--image", "x.jpg", "--prompt", "hi"]) == 2
    assert "checkpoint folder not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    assert main(["chat", "--version", str(tiny_ckpt), "--image", str(bad), "--prompt", "hi",
                 "--max_new_tokens", "2", "--device", "cpu", "--precision", "fp32"]) == 2
    assert "cannot decode the image" in capsys.readouterr().err
    assert main(["chat", "--version", str(tiny_ckpt), "--image", str(tmp_path / "missing.png"), "--prompt", "hi",
                 "--max_new_tokens", "2", "--device", "cpu"]) == 2
    assert "File not found in" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["chat", "--version", str(tiny_ckpt), "--image", str(bad)])
    assert exc.value.code == 2 and "needs both --image and --prompt" in capsys.readouterr().err
