"""LLaVA-1.5 users' workflow end to end on a tiny LLaVA-1.5-layout model: subset a mix JSON ->
`--lora_preset llava15` (the finetune_task_lora.sh recipe) -> merge -> chat (streamed, several turns
on one image, also straight from the run with --model-base) -> 4-bit load."""

import builtins
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.llava import tiny_llava_family, write_llava_data


def _hf_cosine(step: int, warmup: int, total: int) -> float:
    """transformers' cosine schedule with warm-up, written out (the recipe's lr_scheduler_type cosine)."""
    if step < warmup:
        return step / max(1, warmup)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _chat(monkeypatch, capsys, argv, lines):
    from lisa.chat.cli import main

    feed = iter(lines)
    monkeypatch.setattr(builtins, "input", lambda prompt="": (print(prompt, end=""), next(feed))[1])
    rc = main(argv)
    return rc, capsys.readouterr()


@pytest.mark.slow
def test_llava15_task_lora_workflow(tmp_path_factory, monkeypatch, capsys):
    from lisa.checkpoint.loader import load_pretrained
    from lisa.data.cli import main as data_main
    from lisa.export.cli import main as export_main
    from lisa.inference.pipeline import LisaPipeline
    from lisa.preprocess import clip_preprocess, pad_to_square
    from lisa.train.args import parse_args
    from lisa.train.cli import main as train_main
    from lisa.train.data import build_dataset, epoch_loader, make_collate

    root = tmp_path_factory.mktemp("workflow")
    data = write_llava_data(root, n_textvqa=5, n_coco=3, text_only=1)
    base = tiny_llava_family(tmp_path_factory, name="llava-v1.5-7b-tiny")

    # 1. the subset: TextVQA items only, 4 of them, with a seed; counts printed
    sub = root / "textvqa_4.json"
    assert data_main(["subset", str(data["json"]), "--out", str(sub), "--contains", "textvqa", "--sample", "4",
                      "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "read 9 records" in out and "kept by --contains: 5" in out and "wrote 4 records" in out
    records = json.loads(sub.read_text())
    assert len(records) == 4 and all("textvqa" in r["image"] for r in records)

    # 2. the README's command, no --dataset_dir, with the recipe's preset (2 epochs to see two passes)
    runs = root / "runs"
    argv = ["--version", str(base), "--dataset", "vqa", "--vqa_data", str(sub), "--image_folder",
            str(data["images"]), "--no_seg", "--lora_preset", "llava15", "--precision", "fp32", "--workers", "0",
            "--batch_size", "2", "--epochs", "2", "--log_base_dir", str(runs), "--exp_name", "task_lora"]
    assert train_main(argv) == 0
    run_dir = runs / "task_lora"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert (cfg["lora_r"], cfg["lora_alpha"], cfg["lr"], cfg["mm_projector_lr"]) == (128, 256, 2e-4, 2e-5)
    assert (cfg["model_max_length"], cfg["image_aspect_ratio"], cfg["lr_scheduler"]) == (2048, "pad", "cosine")
    assert cfg["epoch_over_data"] and cfg["group_by_modality_length"] and cfg["steps_per_epoch"] == 2
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 0, 1, 1] and all(np.isfinite(r["ce_loss"]) for r in log)
    warmup = math.ceil(0.03 * 4)
    for r in log:  # the lr after each step: the cosine schedule with a 3% warm-up over the 4 steps
        assert r["lr"] == pytest.approx(2e-4 * _hf_cosine(r["step"], warmup, 4), abs=1e-12), log
    assert log[0]["lr"] == pytest.approx(2e-4) and log[-1]["lr"] == pytest.approx(0.0, abs=1e-12)

    # one shuffled pass per epoch, no replacement, the images padded to a square of CLIP's mean colour
    args = parse_args(argv)
    args.steps_per_epoch = 2
    model_cfg = load_pretrained(base, precision="fp32", progress=False)[0].config
    tok = load_pretrained(base, precision="fp32", progress=False)[1]
    dataset = build_dataset(args, model_cfg, rank=0)
    collate = make_collate(args, tok, model_cfg)
    seen = {}
    for epoch in (0, 1):
        seen[epoch] = [p for batch in epoch_loader(dataset, collate, args, epoch, 0) for p in batch["image_paths"]]
    wanted = sorted(str(data["images"] / r["image"]) for r in records)
    assert sorted(seen[0]) == wanted and sorted(seen[1]) == wanted and seen[0] != seen[1]
    dataset.set_epoch(0)
    item = dataset[0]
    image = np.asarray(Image.open(item["image_path"]).convert("RGB"))
    assert image.shape[0] != image.shape[1]
    fill = (122, 116, 104)  # int(255 * CLIP mean)
    expected = clip_preprocess(pad_to_square(image, fill), model_cfg.clip_image_size)
    torch.testing.assert_close(item["images_clip"], expected)
    corner = (torch.tensor(fill) / 255 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) \
        / torch.tensor([0.26862954, 0.26130258, 0.27577711])
    # the top-left corner is padding (above a wide image, left of a tall one): the mean colour, about 0
    torch.testing.assert_close(item["images_clip"][:, 0, 0], corner, atol=0.02, rtol=0)

    # 3. merge (merge_lora_weights.py's step)
    merged = root / "llava-v1.5-7b-task-lora-merged"
    assert export_main(["--run_dir", str(run_dir), "--save_path", str(merged), "--precision", "fp32"]) == 0
    capsys.readouterr()

    # 4. chat: a conversation on one image, streamed; the template the model was trained with
    img = data["images"] / records[0]["image"]
    pipe = LisaPipeline.from_pretrained(merged, precision="fp32", device="cpu", max_new_tokens=6,
                                        temperature=0, progress=False)
    assert pipe.conv_type == "llava_v1" and pipe.kind == "LLaVA"
    assert pipe.model.config.image_aspect_ratio == "pad"
    pieces = []
    first = pipe(Image.open(img), "What is written in the image?", on_text=pieces.append)
    assert "".join(pieces) == first.text
    second = pipe(Image.open(img), "Are you sure?", history=[("What is written in the image?", first.text)])
    argv = ["--version", str(merged), "--image-file", str(img), "--temperature", "0", "--max-new-tokens", "6",
            "--device", "cpu", "--vis_save_path", str(root / "vis")]
    rc, printed = _chat(monkeypatch, capsys, argv, ["What is written in the image?", "Are you sure?", ""])
    assert rc == 0, printed.err
    turns = [line for line in printed.out.splitlines() if "ASSISTANT: " in line]
    assert [t.split("ASSISTANT: ", 1)[1] for t in turns] == [first.text, second.text]
    assert not (root / "vis").exists()  # no masks from a LLaVA model, no files

    # the same from the run folder on its base, without merging (LLaVA's --model-base)
    argv = ["--model-path", str(run_dir), "--model-base", str(base), "--image-file", str(img), "--prompt",
            "What is written in the image?", "--temperature", "0", "--max-new-tokens", "6", "--device", "cpu",
            "--json"]
    rc, printed = _chat(monkeypatch, capsys, argv, [])
    assert rc == 0, printed.err
    assert json.loads(printed.out.strip().splitlines()[-1])["text"] == first.text

    # 5. served 4-bit (--load-4bit): the LLM's linears quantized, the answer comes
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    argv = ["--version", str(merged), "--load-4bit", "--image-file", str(img), "--prompt", "Describe it.",
            "--max-new-tokens", "4", "--device", "cpu", "--json"]
    rc, printed = _chat(monkeypatch, capsys, argv, [])
    assert rc == 0, printed.err
    q = LisaPipeline.from_pretrained(merged, device="cpu", load_in_4bit=True, max_new_tokens=4, progress=False)
    assert isinstance(q.model.llm.model.layers[0].mlp.down_proj, bnb.nn.Linear4bit)
    assert len(q(Image.open(img), "Describe it.").output_ids) >= 1
