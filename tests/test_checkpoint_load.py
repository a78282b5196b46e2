"""Loading checkpoints in every supported layout, exact round trips, and clear errors."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from lisa.checkpoint.errors import CheckpointError
from lisa.checkpoint.files import load_torch_file
from lisa.checkpoint.layout import internal_to_lisa
from lisa.checkpoint.loader import load_pretrained
from lisa.checkpoint.saver import save_pretrained


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_released_layout_loads_with_clip_subfolder(tiny_ckpt, tiny_model):
    model, tok = tiny_model
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    assert cfg["model_type"] == "llava" and cfg["train_mask_decoder"] is True
    assert cfg["vision_tower"] == "vision_tower"
    state = torch.load(tiny_ckpt / "pytorch_model.bin", weights_only=True)
    assert not any("vision_tower" in k for k in state)  # released checkpoints carry no CLIP
    assert any(k.startswith("model.visual_model.image_encoder.blocks.") for k in state)
    assert "model.text_hidden_fcs.0.0.weight" in state and "model.mm_projector.weight" in state
    assert tok.convert_tokens_to_ids("[SEG]") == model.seg_token_id


def test_native_format_round_trip_is_exact_including_mixed_dtypes(tiny_model, tmp_path):
    import copy

    model, tok = tiny_model
    model = copy.deepcopy(model)
    model.llm.to(torch.bfloat16)  # mixed: LLM bf16, SAM/head fp32, as the released checkpoints
    save_pretrained(model, tok, tmp_path / "native", format="native")
    assert (tmp_path / "native" / "model.safetensors").is_file()
    again, tok2 = load_pretrained(tmp_path / "native", progress=False)
    _same_weights(model, again)
    assert again.llm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert again.sam.mask_decoder.iou_token.weight.dtype == torch.float32
    assert tok2.get_vocab() == tok.get_vocab()


def test_sharded_bin_and_sharded_safetensors(tiny_model, tmp_path):
    model, tok = tiny_model
    save_pretrained(model, tok, tmp_path / "bin", format="lisa", max_shard_size="300KB")
    index = json.loads((tmp_path / "bin" / "pytorch_model.bin.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    _same_weights(model, load_pretrained(tmp_path / "bin", progress=False)[0])
    save_pretrained(model, tok, tmp_path / "st", format="native", max_shard_size="300KB")
    assert (tmp_path / "st" / "model.safetensors.index.json").is_file()
    _same_weights(model, load_pretrained(tmp_path / "st", progress=False)[0])


def test_clip_weights_inside_checkpoint_and_override_flag(tiny_ckpt, tiny_model, tmp_path):
    model, tok = tiny_model
    # CLIP weights inside the shard (as in-memory LISA names), no CLIP folder at all
    d = _copy(tiny_ckpt, tmp_path / "with_clip")
    clip_dir = tmp_path / "my_clip"
    shutil.move(str(d / "vision_tower"), clip_dir)
    state = torch.load(d / "pytorch_model.bin", weights_only=True)
    state.update(internal_to_lisa({k: v for k, v in model.state_dict().items() if k.startswith("vision_tower.")}))
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)  # stale 4.31 key: ignored
    (d / "pytorch_model.bin").unlink()
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "model.safetensors"))
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("lisa")  # a foreign config: the CLIP config must come from the tensors
    cfg["vision_tower"] = cfg["mm_vision_tower"] = "openai/clip-vit-large-patch14"
    (d / "config.json").write_text(json.dumps(cfg))
    loaded = load_pretrained(d, progress=False)[0]
    assert torch.equal(loaded.vision_tower.vision_tower.embeddings.patch_embedding.weight,
                       model.vision_tower.vision_tower.embeddings.patch_embedding.weight)
    # without CLIP weights and without the folder: a clear error that names the flag
    d2 = _copy(tiny_ckpt, tmp_path / "no_clip")
    shutil.rmtree(d2 / "vision_tower")
    with pytest.raises(CheckpointError, match="--vision-tower"):
        load_pretrained(d2, progress=False)
    again = load_pretrained(d2, vision_tower=str(clip_dir), progress=False)[0]
    _same_weights(model, again)


def test_missing_unexpected_and_shape_errors_name_file_and_keys(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path / "bad")
    state = torch.load(d / "pytorch_model.bin", weights_only=True)
    good = dict(state)
    del state["model.layers.1.mlp.up_proj.weight"]
    torch.save(state, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"missing keys.*llm\.model\.layers\.1\.mlp\.up_proj\.weight"):
        load_pretrained(d, progress=False)
    state = dict(good, **{"model.visual_model.extra.weight": torch.zeros(2)})
    torch.save(state, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError,
                       match=r"pytorch_model\.bin.*unexpected keys.*model\.visual_model\.extra\.weight"):
        load_pretrained(d, progress=False)
    state = dict(good)
    state["model.mm_projector.weight"] = torch.zeros(3, 3)
    torch.save(state, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: shape mismatch.*mm_projector"):
        load_pretrained(d, progress=False)


def test_truncated_and_missing_shards_and_config(tiny_model, tmp_path):
    model, tok = tiny_model
    d = save_pretrained(model, tok, tmp_path / "sh", format="lisa", max_shard_size="300KB")
    shards = sorted(d.glob("pytorch_model-*.bin"))
    data = shards[0].read_bytes()
    shards[0].write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=shards[0].name):
        load_pretrained(d, progress=False)
    shards[0].unlink()
    with pytest.raises(CheckpointError, match=r"lists shard\(s\) that do not exist"):
        load_pretrained(d, progress=False)
    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        load_pretrained(tmp_path / "nope", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json not found"):
        load_pretrained(tmp_path / "empty", progress=False)
    (tmp_path / "empty" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="malformed JSON"):
        load_pretrained(tmp_path / "empty", progress=False)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.bin"
    torch.save({"w": torch.zeros(1), "obj": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_torch_file(path)
