"""The banded relative-position attention gives transformers' SAM encoder output, bands or not."""

import pytest
import torch
from transformers import SamModel
from transformers.models.sam.modeling_sam import SamVisionAttention

from helpers.sam import tiny_sam_with_rel_pos
from lisa.model import sam_attention


def _sam():
    return tiny_sam_with_rel_pos()


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


def test_contiguous_upscaling_keeps_the_decoder_output_and_gradients():
    from lisa.model.sam import SamPrompter
    from lisa.model.sam_upscaling import remove_contiguous_upscaling, use_contiguous_upscaling

    sam = _sam()
    dec = sam.mask_decoder
    seen = []
    dec.upscale_conv2.register_forward_hook(lambda m, i, o: seen.append(i[0].is_contiguous()))
    emb = torch.randn(3, 32, 8, 8)
    prompts = torch.randn(5, 32, requires_grad=True)
    index = torch.tensor([0, 0, 1, 2, 2])

    def run():
        sam.zero_grad(set_to_none=True)
        out = SamPrompter(sam).decode_many(emb, prompts, index)
        (g_prompts,) = torch.autograd.grad(out.square().sum(), prompts)
        return out, g_prompts

    ours, g_ours = run()
    assert seen == [True]  # the layer norm's output reached the convolution contiguous
    remove_contiguous_upscaling(sam)
    ref, g_ref = run()
    assert seen == [True, False]  # transformers' own layout is the channels-last one
    assert torch.allclose(ours, ref, atol=1e-6) and torch.allclose(g_ours, g_ref, atol=1e-6, rtol=1e-4)
    use_contiguous_upscaling(sam)
    use_contiguous_upscaling(sam)  # once per decoder
    assert len(dec.upscale_conv2._forward_hooks) == 2  # the test's hook and one of ours
