"""A tiny random SAM (64 px, two layers, one with global attention) whose relative-position tables are
drawn large, so a wrong bias in the encoder's attention shows in its output."""

from __future__ import annotations


def tiny_sam_with_rel_pos():
    import torch

    from lisa.model.sam import build_sam, sam_config

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
