"""The banded relative-position attention gives transformers' SAM encoder output, bands or not."""

import pytest
import torch
from transformers import SamModel
from transformers.models.sam.modeling_sam import SamVisionAttention

from lisa.model import sam_attention
from lisa.model.sam import build_sam, sam_config


def _sam():
    torch.manual_seed(0)
    sam = build_sam(sam_config(image_size=64, patch_size=8, window_size=4, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, global_attn_indexes=[1], prompt_dim=32, decoder_mlp_dim=64,
                               decoder_heads=2, initializer_range=0.02))
    with torch.no_grad():
        for module in sam.vision_encoder.modules():
            if hasattr(module, "rel_pos_h"):
                module.rel_pos_h.normal_(std=0.5)
                module.rel_pos_w.normal_(std=0.5)
    return sam


@pytest.mark.parametrize("band_bytes", [sam_attention.BAND_BYTES, 2 * (2 * 2 * 8 * 8 * 8 * 4)])
def test_banded_attention_matches_eager(monkeypatch, band_bytes):
    monkeypatch.setattr(sam_attention, "BAND_BYTES", band_bytes)  # the second value: bands of 2 rows (of 8)
    sam = _sam()
    attn = [m for m in sam.vision_encoder.modules() if isinstance(m, SamVisionAttention)]
    assert attn and all(type(m) is sam_attention.BandedRelPosAttention for m in attn)
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    ours = sam.vision_encoder(x).last_hidden_state
    (g_ours,) = torch.autograd.grad(ours.square().sum(), x)
    for m in attn:
        m.__class__ = SamVisionAttention  # transformers' eager reference
    ref = sam.vision_encoder(x).last_hidden_state
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-4)
    assert torch.allclose(g_ours, g_ref, atol=1e-5, rtol=1e-3)


def test_state_dict_keys_unchanged():
    sam = _sam()
    plain = SamModel(sam.config)
    assert sam.state_dict().keys() == plain.state_dict().keys()
