"""`lisa export`: DeepSpeed run -> merged folder that loads with identical outputs; LISA layout; the
original LISA's zero_to_fp32 key names."""

import json

import numpy as np
import pytest
import torch

from helpers.train import data_tree, reference_run


@pytest.fixture(scope="module")
def ref(tmp_path_factory, tiny_ckpt):
    return reference_run(tmp_path_factory, tiny_ckpt)


@pytest.fixture(scope="module")
def trained_in_memory(ref):
    """The trained module (LoRA not merged) rebuilt from the last step's state."""
    from lisa.train.args import namespace
    from lisa.train.model_setup import build_model

    model, tok, _ = build_model(namespace(**ref["args"]))
    model.load_state_dict(ref["states"][4])
    return model.eval(), tok


@pytest.fixture(scope="module")
def exports(ref, tmp_path_factory):
    from lisa.export.cli import main

    out = tmp_path_factory.mktemp("export")
    for fmt in ("native", "lisa"):
        assert main(["--run_dir", str(ref["run_dir"]), "--save_path", str(out / fmt), "--format", fmt,
                     "--precision", "fp32"]) == 0
    return out


def _val_item(tmp_path_factory):
    from lisa.data import build_val_dataset

    return build_val_dataset(str(data_tree(tmp_path_factory)), "ReasonSeg|val", clip_size=56, sam_size=128)[0]


def _teacher_logits(model, tok, item):
    """Mask logits of the teacher-forced validation forward."""
    from lisa.data.collate import collate

    batch = collate([item], tok, num_image_tokens=model.config.num_image_tokens)
    with torch.no_grad():
        out = model(**batch)
    return out["pred_masks"][0]


def test_export_reloads_with_identical_masks_and_text(ref, exports, trained_in_memory, tmp_path_factory):
    from lisa.checkpoint.loader import load_pretrained
    from lisa.inference.pipeline import LisaPipeline

    trained, tok = trained_in_memory
    item = _val_item(tmp_path_factory)
    image = (np.random.default_rng(0).integers(0, 255, (40, 60, 3))).astype(np.uint8)
    ref_logits = _teacher_logits(trained, tok, item)
    ref_answer = LisaPipeline(trained, tok, max_new_tokens=12)(image, "Can you segment the dog in this image?")
    for fmt in ("native", "lisa"):
        model, tok2 = load_pretrained(exports / fmt, precision="fp32", progress=False)
        assert len(tok2) == len(tok) and model.seg_token_id == trained.seg_token_id
        logits = _teacher_logits(model, tok2, item)
        torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
        assert torch.equal(logits > 0, ref_logits > 0)
        answer = LisaPipeline(model, tok2, max_new_tokens=12)(image, "Can you segment the dog in this image?")
        assert answer.output_ids == ref_answer.output_ids and answer.text == ref_answer.text
        assert len(answer.masks) == len(ref_answer.masks)
        for a, b in zip(answer.masks, ref_answer.masks):
            assert np.array_equal(a, b)


def test_lisa_format_is_the_released_layout(exports):
    from lisa.checkpoint.files import load_torch_file

    folder = exports / "lisa"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["train_mask_decoder"] is True and cfg["architectures"] == ["LISAForCausalLM"]
    assert cfg["vision_tower"] == "vision_tower" and (folder / "vision_tower" / "config.json").is_file()
    state = load_torch_file(folder / "pytorch_model.bin")
    assert "model.layers.0.self_attn.q_proj.weight" in state
    assert "model.visual_model.mask_decoder.iou_token.weight" in state
    assert not any(".lora_" in k or "base_layer" in k or "vision_tower" in k for k in state)
    assert "model.text_hidden_fcs.0.2.weight" in state


@pytest.mark.parametrize("sharded", [False, True])
def test_original_zero_to_fp32_output_merges_like_our_run(ref, exports, tiny_ckpt, tmp_path, sharded):
    """A consolidated state dict with the original's PEFT key names (peft 0.4, no base_layer), as one
    pytorch_model.bin or as shards with an index (what newer DeepSpeed's zero_to_fp32 writes)."""
    from lisa.checkpoint.files import read_folder
    from lisa.checkpoint.layout import internal_to_lisa
    from lisa.export.cli import main

    ours = ref["states"][4]
    renamed = {k.replace(".base_layer.", "."): v for k, v in ours.items()}
    lora = {k: v for k, v in renamed.items() if ".lora_" in k}
    plain = internal_to_lisa({k: v for k, v in renamed.items() if ".lora_" not in k})
    original = {"base_model.model." + k: v for k, v in {**plain, **{k[4:]: v for k, v in lora.items()}}.items()}
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight" in original
    assert "base_model.model.model.visual_model.mask_decoder.iou_token.weight" in original
    src = tmp_path / "pytorch_model.bin"
    if sharded:
        src = tmp_path / "consolidated"
        src.mkdir()
        keys = sorted(original)
        halves = {"pytorch_model-00001-of-00002.bin": keys[::2], "pytorch_model-00002-of-00002.bin": keys[1::2]}
        for name, part in halves.items():
            torch.save({k: original[k] for k in part}, src / name)
        (src / "pytorch_model.bin.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {k: n for n, part in halves.items() for k in part}}))
    else:
        torch.save(original, src)
    assert main(["--source", str(src), "--version", str(tiny_ckpt), "--save_path", str(tmp_path / "out"),
                 "--precision", "fp32"]) == 0
    theirs, _ = read_folder(tmp_path / "out", progress=False)
    mine, _ = read_folder(exports / "native", progress=False)
    assert set(theirs) == set(mine)
    for k in mine:
        torch.testing.assert_close(theirs[k], mine[k], rtol=0, atol=0, msg=k)


def test_export_errors_name_the_problem(ref, tmp_path):
    from lisa.export.cli import main

    assert main(["--source", str(tmp_path / "nothing"), "--save_path", str(tmp_path / "o")]) == 2
    bare = tmp_path / "pytorch_model.bin"
    torch.save({"base_model.model.lm_head.weight": torch.zeros(2, 2)}, bare)
    with pytest.raises(Exception, match="--version"):
        from lisa.export import export
        export(bare, tmp_path / "o2")
