"""CPU speed paths that must not change results: reused SAM bias buffers, the allocator policy."""

import torch

from lisa.model import sam_attention
from lisa.model.allocator import reuse_freed_memory
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
    return sam.eval()


def test_bias_bands_in_one_buffer_are_bit_identical(monkeypatch):
    monkeypatch.setattr(sam_attention, "BAND_BYTES", 2 * (2 * 2 * 8 * 8 * 8 * 4))  # bands of 2 rows (of 8)
    sam = _sam()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reused = sam.vision_encoder(x).last_hidden_state  # one buffer for every band
        monkeypatch.setattr(sam_attention.BandedRelPosAttention, "reuse_bias_buffer", False)
        fresh = sam.vision_encoder(x).last_hidden_state  # a new bias tensor per band
    assert torch.equal(fresh, reused)


def test_allocator_policy_keeps_results():
    sam = _sam()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = sam.vision_encoder(x).last_hidden_state
        first = reuse_freed_memory()
        assert reuse_freed_memory() == first  # once per process
        after = sam.vision_encoder(x).last_hidden_state
    assert torch.equal(before, after)
