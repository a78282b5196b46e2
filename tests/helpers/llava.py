"""Tiny LLaVA-format data and tiny LLaVA models of several families for the LLaVA workflow tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .train import cached

ANSWERS = ["The sign says stop.", "It reads open.", "A red word.", "Two letters.", "The word exit.", "Blue text."]


def write_llava_data(root: Path, n_textvqa: int = 5, n_coco: int = 3, text_only: int = 1) -> dict:
    """``root/mix.json`` in LLaVA-1.5's mix format (TextVQA and COCO image paths, text-only records)
    with its images under ``root/images``; non-square images of several sizes."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(n_textvqa + n_coco):
        sub = "textvqa/train_images" if i < n_textvqa else "coco/train2017"
        name = f"{sub}/{i:04d}.jpg"
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = (24 + 4 * i, 48) if i % 2 == 0 else (48, 30 + 2 * i)
        Image.fromarray(rng.integers(0, 255, (h, w, 3)).astype(np.uint8)).save(path)
        turns = [{"from": "human", "value": "<image>\nWhat is written in the image?"},
                 {"from": "gpt", "value": ANSWERS[i % len(ANSWERS)]}]
        if i % 3 == 0:
            turns += [{"from": "human", "value": "Are you sure?"}, {"from": "gpt", "value": "Yes."}]
        records.append({"id": f"r{i}", "image": name, "conversations": turns})
    for j in range(text_only):
        records.append({"id": f"t{j}", "conversations": [{"from": "human", "value": "Say hello."},
                                                         {"from": "gpt", "value": "Hello."}]})
    (root / "mix.json").write_text(json.dumps(records))
    return {"json": root / "mix.json", "images": root / "images", "records": records}


def tiny_llava_family(tmp_path_factory, llm: str = "llama", tower: str = "clip", name: str | None = None) -> Path:
    """A tiny LLaVA-1.5-layout model (2-layer MLP projector, pad) of the given family, built once."""
    def build():
        from lisa.checkpoint.tiny import make_tiny_llava

        out = tmp_path_factory.mktemp(f"llava_{llm}_{tower}") / (name or f"llava-v1.5-tiny-{llm}-{tower}")
        make_tiny_llava(out, version="v1.5", llm=llm, tower=tower)
        return out
    return cached(("llava_family", llm, tower, name), build)


def plain_args(version, data: dict, runs: Path, **kw) -> dict:
    """`lisa train` options of a plain LLaVA fine-tune on ``data`` (no --dataset_dir)."""
    args = dict(version=str(version), dataset="vqa", vqa_data=str(data["json"]), image_folder=str(data["images"]),
                no_seg=True, log_base_dir=str(runs), precision="fp32", workers=0, batch_size=2,
                grad_accumulation_steps=1, epochs=1, steps_per_epoch=2, warmup_steps=1, lr=1e-3, save_steps=0,
                lora_r=4, lora_alpha=8, auto_resume=False)
    args.update(kw)
    return args
