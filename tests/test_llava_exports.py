"""`lisa export --format llava / llava-hf`: the layouts the LLaVA world loads, checked by loading them
(transformers' LlavaForConditionalGeneration, our loader) and comparing logits; LLaVA's LoRA adapter
folders applied with --model-base."""

import argparse
import json

import numpy as np
import pytest
import torch

from helpers.llava import tiny_llava_family
from lisa.constants import IMAGE_TOKEN_INDEX

IMAGE = np.random.default_rng(5).integers(0, 255, (40, 70, 3)).astype(np.uint8)


def _ours(model, tok, prompt):
    from lisa.tokenization import tokenizer_image_token

    ids = tokenizer_image_token(prompt, tok)
    px = model.config.vision_input(IMAGE)[None]
    with torch.no_grad():
        logits = model.run_llm(torch.tensor([ids]), model.encode_clip(px), torch.tensor([0]))[2][0]
    return ids, px, logits


@pytest.mark.parametrize("tower", ["clip", "siglip"])
def test_llava_hf_export_loads_in_transformers_with_equal_logits(tmp_path_factory, tmp_path, tower):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from lisa.checkpoint.loader import load_pretrained
    from lisa.conversation import build_prompt
    from lisa.export import save_model

    model, tok = load_pretrained(tiny_llava_family(tmp_path_factory, tower=tower), precision="fp32", progress=False)
    out = save_model(model, tok, tmp_path / "hf", format="llava-hf", progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"] and config["model_type"] == "llava"
    assert config["image_token_index"] == len(tok) and config["image_seq_length"] == model.config.num_image_tokens
    assert config["vision_feature_select_strategy"] == ("default" if tower == "clip" else "full")
    hf = LlavaForConditionalGeneration.from_pretrained(out).eval()
    assert {"vision_tower", "multi_modal_projector", "language_model"} <= {n for n, _ in hf.model.named_children()}

    prompt = build_prompt(["<image>\nWhat is written in the image?"], [None])
    ids, px, ours = _ours(model, tok, prompt)
    hf_ids = [t for i in ids for t in ([config["image_token_index"]] * model.config.num_image_tokens
                                      if i == IMAGE_TOKEN_INDEX else [i])]
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor([hf_ids]), pixel_values=px).logits[0]
    assert theirs.shape[0] == ours.shape[0]
    torch.testing.assert_close(theirs[:, :ours.shape[1]], ours, rtol=1e-5, atol=1e-5)

    processor = AutoProcessor.from_pretrained(out)
    inputs = processor(images=IMAGE, text=prompt, return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == hf_ids  # the processor's prompt is ours, token for token
    # with LLaVA-1.5's padding to a square of the processor's mean colour
    torch.testing.assert_close(inputs["pixel_values"], px, atol=1e-5, rtol=0)
    chat = processor.apply_chat_template([{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "What is written in the image?"}]}], add_generation_prompt=True)
    assert chat == prompt

    # and the folder is a source for us too
    again, tok2 = load_pretrained(out, precision="fp32", progress=False)
    assert again.config.image_aspect_ratio == model.config.image_aspect_ratio
    torch.testing.assert_close(_ours(again, tok2, prompt)[2][:, :ours.shape[1]], ours, rtol=0, atol=0)


def test_llava_export_is_the_original_repository_layout(tmp_path_factory, tmp_path):
    from safetensors import safe_open

    from lisa.checkpoint.loader import load_pretrained
    from lisa.conversation import build_prompt
    from lisa.export import save_model

    model, tok = load_pretrained(tiny_llava_family(tmp_path_factory), precision="fp32", progress=False)
    out = save_model(model, tok, tmp_path / "llava", format="llava", progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlavaLlamaForCausalLM"] and config["model_type"] == "llava_llama"
    assert (config["mm_projector_type"], config["image_aspect_ratio"], config["mm_vision_select_layer"]) == \
        ("mlp2x_gelu", "pad", -2)
    assert "lisa" not in config and "train_mask_decoder" not in config
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"model.mm_projector.0.weight", "model.mm_projector.2.bias", "lm_head.weight",
            "model.layers.0.self_attn.q_proj.weight"} <= keys
    assert not any(k.startswith(("model.vision_tower", "model.visual_model")) for k in keys)
    assert (out / "vision_tower" / "preprocessor_config.json").is_file()
    again, tok2 = load_pretrained(out, precision="fp32", progress=False)
    prompt = build_prompt(["<image>\nDescribe it."], [None])
    torch.testing.assert_close(_ours(again, tok2, prompt)[2], _ours(model, tok, prompt)[2], rtol=0, atol=0)


def test_model_base_applies_a_llava_lora_adapter_folder(tmp_path_factory, tmp_path):
    from peft import LoraConfig, get_peft_model

    from lisa.checkpoint.loader import load_pretrained
    from lisa.inference.flags import add_model_args, load_pipeline

    base = tiny_llava_family(tmp_path_factory)
    model, _ = load_pretrained(base, precision="fp32", progress=False)
    torch.manual_seed(0)
    peft_model = get_peft_model(model.llm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # as after training (peft starts B at zero)
    lora_dir = tmp_path / "llava-v1.5-7b-task-lora"
    peft_model.save_pretrained(str(lora_dir))
    projector = {"base_model.model.model.mm_projector.0.weight": torch.randn_like(model.mm_projector[0].weight)}
    torch.save(projector, lora_dir / "non_lora_trainables.bin")
    merged = peft_model.merge_and_unload()

    ap = argparse.ArgumentParser()
    add_model_args(ap)
    args = ap.parse_args(["--model-path", str(lora_dir), "--model-base", str(base), "--device", "cpu",
                          "--temperature", "0", "--max-new-tokens", "3"])
    pipe = load_pipeline(args)
    assert pipe.conv_type == "llava_v1"
    for name, p in merged.named_parameters():
        torch.testing.assert_close(pipe.model.llm.get_parameter(name), p, rtol=0, atol=0, msg=name)
    assert torch.equal(pipe.model.mm_projector[0].weight, projector["base_model.model.model.mm_projector.0.weight"])
    assert len(pipe(IMAGE, "Describe it.").output_ids) >= 1

    # lisa serve: --model-base reaches a served model, as a flag or a spec's model_base key
    from lisa.serve.cli import build_parser, model_defaults
    from lisa.serve.models import model_specs

    serve_args = build_parser().parse_args(["--version", str(lora_dir), "--model-base", str(base), "--device", "cpu"])
    (spec,) = [s.with_defaults(model_defaults(serve_args)) for s in model_specs(None, serve_args.version)]
    assert spec.model_base == str(base)
    (spec,) = model_specs([f"{lora_dir}:name=task,model_base={base},device=cpu"])
    served = spec.load(max_new_tokens=3)
    for name, p in merged.named_parameters():
        torch.testing.assert_close(served.model.llm.get_parameter(name), p, rtol=0, atol=0, msg=name)
