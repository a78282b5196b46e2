"""Official SAM checkpoint names <-> transformers SamModel, and ViT-B/L/H detection from shapes."""

import json

import pytest
import torch
from transformers import SamModel

from lisa.checkpoint.errors import CheckpointError
from lisa.checkpoint.sam_keys import hf_to_official, infer_sam_config_dict, load_sam_checkpoint, official_to_hf
from lisa.model.sam import sam_config

# key counts of the released ViT-H checkpoint: image_encoder 457, prompt_encoder 17, mask_decoder 120
OFFICIAL_COUNTS = {"vit_h": (457, 17, 120)}


@pytest.mark.parametrize("preset", ["vit_b", "vit_l", "vit_h"])
def test_presets_detected_and_key_mapping_is_a_bijection(preset):
    with torch.device("meta"):
        sam = SamModel(sam_config(preset))
    hf = sam.state_dict()
    official = hf_to_official(hf)
    assert len(official) == len(hf) - 1  # the tied copy of the positional matrix is not saved
    assert infer_sam_config_dict(official) == {"preset": preset}
    back = official_to_hf(official)
    assert set(back) == set(hf)
    assert all(back[k].shape == hf[k].shape for k in hf)
    assert all(k.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder.")) for k in official)
    if preset in OFFICIAL_COUNTS:
        counts = tuple(sum(k.startswith(p) for k in official)
                       for p in ("image_encoder.", "prompt_encoder.", "mask_decoder."))
        assert counts == OFFICIAL_COUNTS[preset]
    assert "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in official
    assert official["image_encoder.blocks.7.attn.rel_pos_h"].shape[0] in (27, 127)


def test_custom_size_detected_and_loaded_from_pth(tmp_path):
    cfg = sam_config(image_size=128, patch_size=16, window_size=4, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, global_attn_indexes=[1], prompt_dim=32, decoder_mlp_dim=64,
                     decoder_heads=2)
    torch.manual_seed(0)
    sam = SamModel(cfg).eval()
    path = tmp_path / "sam_tiny.pth"
    torch.save(hf_to_official(sam.state_dict()), path)
    detected = infer_sam_config_dict(torch.load(path, weights_only=True))
    assert detected["hidden_size"] == 32 and detected["num_hidden_layers"] == 2
    assert detected["global_attn_indexes"] == [1] and detected["window_size"] == 4
    assert detected["image_size"] == 128 and detected["prompt_dim"] == 32
    # with an explicit SamConfig JSON beside the weights, the JSON wins
    (tmp_path / "sam_config.json").write_text(json.dumps(cfg.to_dict()))
    loaded_cfg, state = load_sam_checkpoint(path)
    sam2 = SamModel(loaded_cfg).eval()
    sam2.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(sam.vision_encoder(x).last_hidden_state, sam2.vision_encoder(x).last_hidden_state)


def test_not_a_sam_checkpoint(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"foo": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        load_sam_checkpoint(path)


def test_unknown_preset_is_named_in_the_error():
    from lisa.model.sam import sam_config

    with pytest.raises(ValueError, match=r"unknown SAM preset 'vit_x'; choose one of \['vit_b', 'vit_h', 'vit_l'\]"):
        sam_config("vit_x")
