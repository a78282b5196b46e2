"""Plain LLaVA fine-tuning (`--no_seg`) and LISA training started from a base LLaVA + SAM .pth."""

import json

import numpy as np
import pytest
import torch

from helpers.train import base_args, data_tree, tiny_llava, tiny_sam


def test_plain_llava_finetune_merge_and_chat(tmp_path_factory):
    from lisa.checkpoint.loader import load_pretrained
    from lisa.export import export
    from lisa.inference.pipeline import LisaPipeline
    from lisa.train import run
    from lisa.train.args import namespace
    from lisa.train.model_setup import build_model

    data, llava = data_tree(tmp_path_factory), tiny_llava(tmp_path_factory)
    states = {}
    args = base_args(data, tmp_path_factory.mktemp("llava_runs"), llava, exp_name="vqa", no_seg=True,
                     dataset="vqa", vqa_data=str(data / "llava_dataset" / "llava_instruct_150k.json"),
                     image_folder=str(data / "coco" / "train2017"), lora_preset="llava15", steps_per_epoch=3)
    args.pop("sample_rates")
    args.pop("lr")
    run_dir = run(args, on_step=lambda tr: states.update(tr.engine.module.state_dict()))
    cfg = json.loads((run_dir / "config.json").read_text())
    assert (cfg["lora_r"], cfg["lora_alpha"], cfg["mm_projector_lr"], cfg["lr"]) == (128, 256, 2e-5, 2e-4)
    assert cfg["deepspeed_config"]["optimizer"]["params"]["lr"] == [2e-4, 2e-5]
    info = json.loads((run_dir / "model_config.json").read_text())
    assert len(info["lora"]["modules"]) == 14  # every linear of the 2 LLaMA layers
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert all(r["mask_loss"] is None and np.isfinite(r["ce_loss"]) for r in log)

    base, _ = load_pretrained(llava, precision="fp32", progress=False)
    assert not torch.equal(states["mm_projector.weight"], base.mm_projector.weight)  # projector trained
    assert torch.equal(states["llm.lm_head.weight"], base.llm.lm_head.weight)  # frozen in the preset

    out = export(run_dir, tmp_path_factory.mktemp("llava_out") / "merged", precision="fp32", progress=False)
    merged, tok = load_pretrained(out, precision="fp32", progress=False)
    assert not merged.config.has_seg_head and "[SEG]" not in tok.get_vocab()
    trained, tok0 = build_model(namespace(**args))[:2]
    trained.load_state_dict(states)
    image = np.random.default_rng(1).integers(0, 255, (30, 40, 3)).astype(np.uint8)
    a = LisaPipeline(merged, tok, max_new_tokens=10)(image, "Describe the image.")
    b = LisaPipeline(trained.eval(), tok0, max_new_tokens=10)(image, "Describe the image.")
    assert a.output_ids == b.output_ids and a.masks == [] and b.masks == []


def test_lisa_training_from_a_base_llava_and_a_sam_checkpoint(tmp_path_factory):
    from lisa.checkpoint.loader import load_pretrained
    from lisa.export import export
    from lisa.train import run

    data, llava, sam = data_tree(tmp_path_factory), tiny_llava(tmp_path_factory), tiny_sam(tmp_path_factory)
    args = base_args(data, tmp_path_factory.mktemp("base_runs"), llava, exp_name="from_base", steps_per_epoch=3,
                     dataset="reason_seg||refer_seg", sample_rates="1,1", vision_pretrained=str(sam))
    run_dir = run(args)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_images"] == 2
    model, tok = load_pretrained(export(run_dir, run_dir.parent / "merged", format="lisa", precision="fp32",
                                        progress=False), precision="fp32", progress=False)
    assert model.config.has_seg_head and model.config.out_dim == 32
    # LLaMA-2 style base: [SEG], <im_start>, <im_end> appended in the original's order
    assert [tok.convert_tokens_to_ids(t) for t in ("[SEG]", "<im_start>", "<im_end>")] == [400, 401, 402]
    assert model.llm.get_input_embeddings().weight.shape[0] == 403
    sam_official = torch.load(sam, weights_only=True)
    # SAM's image encoder is frozen: still the .pth weights after training and export
    assert torch.equal(model.sam.vision_encoder.patch_embed.projection.weight,
                       sam_official["image_encoder.patch_embed.proj.weight"])


def test_missing_sam_weights_for_a_base_model_is_a_clear_error(tmp_path_factory, capsys):
    from lisa.train.cli import main

    data, llava = data_tree(tmp_path_factory), tiny_llava(tmp_path_factory)
    rc = main(["--version", str(llava), "--dataset_dir", str(data), "--precision", "fp32",
               "--log_base_dir", str(tmp_path_factory.mktemp("err")), "--dataset", "reason_seg"])
    assert rc == 2
    assert "--vision_pretrained" in capsys.readouterr().err


def test_no_seg_refuses_a_lisa_checkpoint(tiny_ckpt, tmp_path_factory):
    from lisa.train.args import namespace
    from lisa.train.model_setup import build_model

    with pytest.raises(ValueError, match="--no_seg"):
        build_model(namespace(version=str(tiny_ckpt), no_seg=True))
