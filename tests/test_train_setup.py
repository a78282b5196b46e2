"""Flags, LoRA target selection, trainable parts and the DeepSpeed config of `lisa train`."""

import json

import pytest

from lisa.train.args import namespace, parse_args
from lisa.train.engine import default_config, load_config, param_groups
from lisa.train.model_setup import LoraSettings, apply_lora, find_lora_targets, set_trainable


def test_flags_and_defaults_of_the_original():
    a = parse_args([])
    expected = dict(log_base_dir="./runs", epochs=10, steps_per_epoch=500, batch_size=2, grad_accumulation_steps=10,
                    lr=0.0003, precision="bf16", lora_r=8, lora_alpha=16, lora_dropout=0.05,
                    lora_target_modules="q_proj,v_proj", ce_loss_weight=1.0, dice_loss_weight=0.5,
                    bce_loss_weight=2.0, out_dim=256, sample_rates="9,3,3,1", val_dataset="ReasonSeg|val",
                    dataset="sem_seg||refer_seg||vqa||reason_seg", exp_name="lisa", workers=4, print_freq=1,
                    train_mask_decoder=True, auto_resume=True, use_mm_start_end=True, beta2=0.95)
    assert {k: getattr(a, k) for k in expected} == expected
    # the original's store-true spellings and the launcher's --local_rank still parse
    b = parse_args(["--train_mask_decoder", "--auto_resume", "--local_rank=3", "--vision-tower", "clip",
                    "--eval_only", "--no_eval", "--seed", "7", "--sam_config", "s.json"])
    assert b.local_rank == 3 and b.vision_tower == "clip" and b.eval_only and b.no_eval and b.seed == 7
    assert parse_args(["--no_auto_resume", "--no_train_mask_decoder"]).auto_resume is False


def test_sample_rates_follow_a_shorter_dataset_list():
    assert parse_args(["--dataset", "vqa"]).sample_rates == "1"
    assert parse_args(["--dataset", "vqa||reason_seg", "--sample_rates", "1,3"]).sample_rates == "1,3"
    with pytest.raises(SystemExit):
        parse_args(["--epochs", "0"])


def test_llava15_preset_explicit_flags_win():
    a = parse_args(["--lora_preset", "llava15", "--lora_alpha", "64"])
    assert (a.lora_r, a.lora_alpha, a.mm_projector_lr, a.train_embeddings) == (128, 64, 2e-5, False)
    assert "gate_proj" in a.lora_targets and a.lr == 2e-4


def test_lora_targets_exclude_sam_clip_projector_and_head(tiny_ckpt):
    from lisa.checkpoint.loader import load_pretrained

    model, _ = load_pretrained(tiny_ckpt, precision="fp32", progress=False)
    names = find_lora_targets(model, ["q_proj", "v_proj"])
    assert names == [f"llm.model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    # SAM's decoder and CLIP have q_proj/v_proj too; they must not be touched
    assert any("q_proj" in n for n, _ in model.sam.named_modules())
    with pytest.raises(ValueError, match="no linear layer"):
        find_lora_targets(model, ["nonexistent_proj"])

    lora = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0, targets=["q_proj", "v_proj"]))
    trainable = set(set_trainable(model))
    assert lora.modules == names
    for name, p in model.named_parameters():
        lora_param = ".lora_" in name
        extra = name in ("llm.model.embed_tokens.weight", "llm.lm_head.weight") or \
            name.startswith(("sam.mask_decoder.", "text_hidden_fcs."))
        assert (name in trainable) == (lora_param or extra), name
        assert p.requires_grad == (name in trainable)
    assert not any(n.startswith(("vision_tower.", "mm_projector.", "sam.vision_encoder.", "sam.prompt_encoder."))
                   for n in trainable)
    assert sum(".lora_A." in n for n in trainable) == 4
    # projector only with its own learning rate, and then in its own group
    set_trainable(model, train_embeddings=False, train_projector=True)
    groups = param_groups(model, 2e-4, 0.0, 2e-5)
    assert len(groups) == 2 and groups[1]["lr"] == 2e-5
    assert not model.llm.lm_head.weight.requires_grad


def test_lr_scales_make_groups_and_reject_typos(tiny_ckpt):
    from lisa.checkpoint.loader import load_pretrained
    from lisa.train.args import parse_lr_scales

    assert parse_lr_scales(" sam.vision_encoder=0.1, text_hidden_fcs=2 ") == [("sam.vision_encoder", 0.1),
                                                                             ("text_hidden_fcs", 2.0)]
    for bad in ("sam.vision_encoder", "=0.1", "sam=fast", "sam=-1"):
        with pytest.raises(ValueError, match="PREFIX=FACTOR"):
            parse_lr_scales(bad)
    with pytest.raises(SystemExit):
        parse_args(["--lr_scales", "sam.vision_encoder"])
    model, _ = load_pretrained(tiny_ckpt, precision="fp32", progress=False)
    set_trainable(model, extra=["sam.vision_encoder"])
    groups = param_groups(model, 1e-3, 0.0, None, [("sam.vision_encoder.", 0.1), ("sam.", 0.5)])
    by_lr = {g["lr"]: g["params"] for g in groups}
    assert sorted(by_lr) == [1e-4, 5e-4, 1e-3]
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("sam.vision_encoder.") for p in by_lr[1e-4])
    assert all(names[id(p)].startswith("sam.mask_decoder.") for p in by_lr[5e-4])  # first match wins
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="'vision_tower'"):  # frozen: a scale for it is a mistake
        param_groups(model, 1e-3, 0.0, None, [("vision_tower", 0.1)])


def test_deepspeed_config_as_original_and_override(tmp_path):
    args = namespace(epochs=10, steps_per_epoch=500)
    cfg = default_config(args)
    assert cfg["train_micro_batch_size_per_gpu"] == 2 and cfg["gradient_accumulation_steps"] == 10
    assert cfg["scheduler"] == {"type": "WarmupDecayLR", "params": {
        "total_num_steps": 5000, "warmup_min_lr": 0, "warmup_max_lr": 0.0003, "warmup_num_steps": 100,
        "warmup_type": "linear"}}
    assert cfg["zero_optimization"]["stage"] == 2 and cfg["gradient_clipping"] == 1.0
    assert cfg["bf16"] == {"enabled": True} and cfg["fp16"] == {"enabled": False}
    assert cfg["optimizer"]["params"]["betas"] == [0.9, 0.95]
    user = tmp_path / "offload.json"
    user.write_text(json.dumps({"train_micro_batch_size_per_gpu": "auto",
                                "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}))
    merged = load_config(namespace(deepspeed_config=str(user)))
    assert merged["zero_optimization"]["offload_optimizer"] == {"device": "cpu"}
    assert merged["train_micro_batch_size_per_gpu"] == 2 and merged["scheduler"]["type"] == "WarmupDecayLR"
    z3 = tmp_path / "z3.json"
    z3.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    assert load_config(namespace(deepspeed_config=str(z3)))["zero_optimization"] == {"stage": 3}
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ValueError, match="malformed"):
        load_config(namespace(deepspeed_config=str(bad)))


def test_python_api_rejects_unknown_options():
    with pytest.raises(TypeError, match="unknown training options"):
        namespace(epochz=3)
    assert namespace(epochs=3, exp_name="x").epochs == 3


def test_full_training_of_chosen_modules_without_lora(tiny_ckpt):
    import torch

    from lisa.checkpoint.loader import load_pretrained

    args = namespace(lora_r=0, train_modules="sam.vision_encoder, vision_tower")
    assert args.train_prefixes == ["sam.vision_encoder", "vision_tower"]
    with pytest.raises(ValueError, match="--lora_r must be >= 0"):
        namespace(lora_r=-1)
    model, _ = load_pretrained(tiny_ckpt, precision="fp32", progress=False)
    with pytest.raises(ValueError, match="--train_modules sam.nothing"):
        set_trainable(model, extra=["sam.nothing"])
    trainable = set(set_trainable(model, extra=args.train_prefixes))
    assert not any(".lora_" in n for n, _ in model.named_parameters())
    assert any(n.startswith("sam.vision_encoder.") for n in trainable)
    assert any(n.startswith("vision_tower.") for n in trainable)
    assert not any(n.startswith(("mm_projector.", "llm.model.layers.")) for n in trainable)
    # the encoders, frozen by default and run without autograd, now pass gradients
    sam_px = torch.randn(1, 3, model.config.sam_image_size, model.config.sam_image_size)
    model.encode_sam(sam_px).sum().backward()
    assert model.sam.vision_encoder.patch_embed.projection.weight.grad is not None
    clip = model.config.clip_image_size
    model.vision_tower(torch.randn(1, 3, clip, clip)).sum().backward()
    assert model.vision_tower.vision_tower.embeddings.patch_embedding.weight.grad is not None
    set_trainable(model)  # back to the default: no gradient through the frozen encoders
    model.zero_grad(set_to_none=True)
    assert not model.encode_sam(sam_px).requires_grad
