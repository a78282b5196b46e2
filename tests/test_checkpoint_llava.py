"""Base LLaVA v1 / v1.5 folders: plain LLaVA chat (no masks) and conversion into a LISA model."""

import json

import numpy as np
import pytest
import torch

from lisa.checkpoint.sam_keys import hf_to_official
from lisa.checkpoint.tiny import make_tiny_llava
from lisa.inference.pipeline import LisaPipeline
from lisa.model.sam import build_sam, sam_config
from lisa.train.conversion import load_as_lisa


@pytest.mark.parametrize("version", ["v1", "v1.5"])
def test_llava_base_loads_and_chats_without_masks(tmp_path, version):
    out = tmp_path / version
    make_tiny_llava(out, version=version)
    cfg = json.loads((out / "config.json").read_text())
    assert "train_mask_decoder" not in cfg
    state = torch.load(out / "pytorch_model.bin", weights_only=True)
    if version == "v1.5":
        assert cfg["mm_projector_type"] == "mlp2x_gelu"
        assert {"model.mm_projector.0.weight", "model.mm_projector.2.weight"} <= set(state)
    else:
        assert "model.mm_projector.weight" in state
    pipe = LisaPipeline.from_pretrained(out, precision="fp32", device="cpu", max_new_tokens=3, progress=False)
    assert not pipe.model.config.has_seg_head and not hasattr(pipe.model, "sam")
    res = pipe(np.zeros((40, 50, 3), np.uint8), "Describe the image.")
    assert res.masks == []


def test_llava_base_becomes_lisa_for_training(tmp_path):
    out = tmp_path / "llava"
    base, base_tok = make_tiny_llava(out, version="v1")
    n_before = len(base_tok)
    small_sam = sam_config(image_size=64, patch_size=16, window_size=2, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, global_attn_indexes=[1], prompt_dim=32, decoder_mlp_dim=64,
                           decoder_heads=2)
    torch.manual_seed(3)
    sam = build_sam(small_sam)
    torch.save(hf_to_official(sam.state_dict()), tmp_path / "sam_small.pth")
    model, tok = load_as_lisa(out, sam_checkpoint=str(tmp_path / "sam_small.pth"), progress=False)
    assert model.config.has_seg_head and model.seg_token_id == tok.convert_tokens_to_ids("[SEG]")
    # LLaVA-v1 already has <im_patch>/<im_start>/<im_end>: only [SEG] is new (as in the original)
    assert len(tok) == n_before + 1 and model.seg_token_id == n_before
    assert model.llm.get_input_embeddings().weight.shape[0] == len(tok)
    assert torch.equal(model.sam.mask_decoder.iou_token.weight, sam.mask_decoder.iou_token.weight)
    assert torch.equal(model.llm.model.layers[0].self_attn.q_proj.weight,
                       base.llm.model.layers[0].self_attn.q_proj.weight)
    assert model.text_hidden_fcs[0][0].weight.abs().sum() > 0  # freshly initialised, not left empty
