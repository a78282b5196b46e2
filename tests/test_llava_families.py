"""Other model families: Llama-3 rope scaling, byte-level (Qwen / Llama-3 style) tokenizers, SigLIP
towers; QLoRA; a run that learns nothing fails loudly."""

import json

import numpy as np
import pytest
import torch

from helpers.llava import ANSWERS, plain_args, tiny_llava_family, write_llava_data


def _data(tmp_path_factory):
    from helpers.train import cached

    return cached("llava_family_data", lambda: write_llava_data(tmp_path_factory.mktemp("family_data"),
                                                                n_textvqa=2, n_coco=2, text_only=1))


def _labelled_runs(ids, labels):
    runs, current = [], []
    for i, lab in zip(ids, labels):
        if lab != -100:
            current.append(i)
        elif current:
            runs, current = runs + [current], []
    return runs + ([current] if current else [])


@pytest.mark.parametrize("llm,conv_type", [("llama3", "llava_v1"), ("qwen2", "chatml_direct"), ("qwen2", "llava_v1")])
def test_byte_level_label_masks_cover_exactly_the_answers(tmp_path_factory, llm, conv_type):
    from lisa.checkpoint.loader import load_pretrained
    from lisa.conversation import get_template
    from lisa.data.collate import collate
    from lisa.data.templates import build_conversation

    model, tok = load_pretrained(tiny_llava_family(tmp_path_factory, llm), precision="fp32", progress=False)
    assert not tok.backend_tokenizer.to_str().count('"Metaspace"')  # byte-level, not SentencePiece
    turns = [("<image>\nWhat is written in the image?", ANSWERS[0]), ("Are you sure?", "Yes, [sure] 100%.")]
    item = {"image_path": "x", "images": torch.zeros(3, 32, 32), "images_clip": torch.zeros(3, 56, 56),
            "conversations": [build_conversation(turns, conv_type)], "masks": torch.zeros(0, 4, 4),
            "label": torch.zeros(4, 4, dtype=torch.long), "resize": (4, 4), "questions": [], "sampled_classes": [],
            "inference": False}
    batch = collate([item], tok, conv_type=conv_type, use_mm_start_end=False, model_max_length=2048,
                    num_image_tokens=model.config.num_image_tokens)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    end = get_template(conv_type).answer_end
    # each supervised run of tokens is one answer with the marker that ends its turn, nothing else
    texts = [tok.decode(run) for run in _labelled_runs(ids, labels)]
    assert [t.strip() for t in texts] == [a + end for _, a in turns], texts
    if llm == "llama3":  # Llama-3 rope scaling loaded (the tokenizer loader no longer trips over it)
        assert model.llm.config.rope_parameters["rope_type"] == "llama3"
        assert model.llm.model.rotary_emb.rope_type == "llama3"
        assert tok.bos_token == "<|begin_of_text|>" and ids[0] == tok.bos_token_id


@pytest.mark.parametrize("llm,tower,conv_type", [("llama3", "siglip", "llava_v1"), ("qwen2", "clip", "chatml_direct")])
def test_other_families_train_and_chat(tmp_path_factory, llm, tower, conv_type):
    from lisa.inference.pipeline import LisaPipeline
    from lisa.train import run

    base = tiny_llava_family(tmp_path_factory, llm, tower)
    states = []
    args = plain_args(base, _data(tmp_path_factory), tmp_path_factory.mktemp("family_runs"), exp_name=f"{llm}_{tower}",
                      conv_type=conv_type)
    run_dir = run(args, on_step=lambda tr: states.append(dict(tr.state)))
    assert [s["finite_steps"] for s in states] == [1, 2] and states[-1].get("unsupervised", 0) == 0
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["ce_loss"]) and not r["skipped"] for r in log)
    pipe = LisaPipeline.from_pretrained(base, precision="fp32", device="cpu", max_new_tokens=4, temperature=0,
                                        conv_type=conv_type, progress=False)
    if tower == "siglip":
        from transformers import SiglipVisionModel

        assert isinstance(pipe.model.vision_tower.vision_tower, SiglipVisionModel)
        assert pipe.model.config.num_image_tokens == (56 // 14) ** 2  # every token a patch: no CLS to drop
    image = np.random.default_rng(3).integers(0, 255, (40, 60, 3)).astype(np.uint8)
    result = pipe(image, "What is written in the image?")
    assert 1 <= len(result.output_ids) <= 4 and result.masks == []


def test_siglip_tower_features_and_preprocessing():
    from transformers import SiglipImageProcessor

    from lisa.checkpoint.tiny_families import tower_config
    from lisa.model.vision import VisionTower, vision_input

    cfg = tower_config("siglip", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                      image_size=56, patch_size=14))
    torch.manual_seed(0)
    tower = VisionTower(cfg, select_layer=-2).eval()
    px = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        feats = tower(px)
        ref = tower.vision_tower(px, output_hidden_states=True).hidden_states[-2]
    assert feats.shape == (2, 16, 32) and torch.equal(feats, ref)
    image = np.random.default_rng(0).integers(0, 255, (30, 70, 3)).astype(np.uint8)
    ours = vision_input(cfg)(image)
    theirs = SiglipImageProcessor(size={"height": 56, "width": 56})(image, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(ours, theirs, atol=2e-2, rtol=0)  # PIL bicubic vs transformers' resize
    with pytest.raises(ValueError, match="no CLS"):
        VisionTower(cfg, select_feature="cls_patch")


def test_a_run_where_no_step_is_finite_fails_and_saves_nothing(tmp_path_factory, monkeypatch, capsys):
    import lisa.data.collate as collate_module
    from lisa.checkpoint import run_folder
    from lisa.train.cli import main

    # as a tokenizer whose labels never line up: no conversation has a supervised token
    monkeypatch.setattr(collate_module, "conversation_labels", lambda *a, **k: None)
    base, data = tiny_llava_family(tmp_path_factory), _data(tmp_path_factory)
    runs = tmp_path_factory.mktemp("nothing")
    argv = ["--version", str(base), "--dataset", "vqa", "--vqa_data", str(data["json"]), "--image_folder",
            str(data["images"]), "--no_seg", "--precision", "fp32", "--workers", "0", "--batch_size", "2",
            "--steps_per_epoch", "2", "--epochs", "1", "--lora_r", "4", "--log_base_dir", str(runs),
            "--exp_name", "nothing"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "none of the 2 optimizer steps had a finite loss" in err and "no supervised token" in err
    assert run_folder.complete_tags(runs / "nothing" / run_folder.CKPT_DIR) == []


def _bnb_4bit_runs_here() -> str | None:
    """None when bitsandbytes' 4-bit layers run (and back-propagate) on this CPU, else why not."""
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        return f"bitsandbytes is not installed ({e})"
    try:
        layer = bnb.nn.Linear4bit(16, 16, bias=False, compute_dtype=torch.float32, quant_type="nf4", device="meta")
        layer.weight = bnb.nn.Params4bit(torch.randn(16, 16).half(), requires_grad=False, quant_type="nf4")
        layer = layer.to("cpu")
        x = torch.randn(2, 16, requires_grad=True)
        layer(x).sum().backward()
        return None if x.grad is not None else "no gradient through a 4-bit layer"
    except Exception as e:  # noqa: BLE001 - any failure means: not on this machine
        return f"bitsandbytes 4-bit does not run on this CPU: {type(e).__name__}: {e}"


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_trains_lora_on_a_quantized_base(tmp_path_factory, bits):
    reason = _bnb_4bit_runs_here()
    if reason:
        pytest.skip(reason)
    import bitsandbytes as bnb

    kind, stored = (bnb.nn.Linear4bit, torch.uint8) if bits == 4 else (bnb.nn.Linear8bitLt, torch.int8)

    from lisa.checkpoint.loader import load_pretrained
    from lisa.export import export
    from lisa.train import run

    base = tiny_llava_family(tmp_path_factory)
    seen = []

    def watch(trainer):
        layer = trainer.engine.module.llm.model.layers[1].mlp.down_proj
        seen.append((layer.base_layer, layer.base_layer.weight.detach().clone(),
                     layer.lora_B.default.weight.detach().clone(), layer.lora_B.default.weight.requires_grad))
    args = plain_args(base, _data(tmp_path_factory), tmp_path_factory.mktemp("qlora"), exp_name="q", bits=bits,
                      lora_target_modules="q_proj,v_proj,down_proj", lr_scheduler="cosine", warmup_ratio=0.0)
    run_dir = run(args, on_step=watch)
    for layer, weight, _, trainable in seen:
        assert isinstance(layer, kind) and weight.dtype == stored and trainable
        assert torch.equal(weight, seen[0][1])  # the quantized base never changes
    assert not torch.equal(seen[0][2], seen[-1][2])  # the LoRA weights train
    # the export merges the LoRA onto the base's full-precision weights
    merged, _ = load_pretrained(export(run_dir, run_dir / "merged", precision="fp32", progress=False),
                                precision="fp32", progress=False)
    original, _ = load_pretrained(base, precision="fp32", progress=False)
    delta = merged.llm.model.layers[1].mlp.down_proj.weight - original.llm.model.layers[1].mlp.down_proj.weight
    assert delta.abs().max() > 0
    assert torch.equal(merged.llm.model.layers[1].mlp.up_proj.weight, original.llm.model.layers[1].mlp.up_proj.weight)
