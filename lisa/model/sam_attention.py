"""SAM's image-encoder attention with its relative-position bias built cheaply.

transformers' ``SamVisionSdpaAttention`` adds SAM's decomposed relative-position terms as one
``[heads, HW, HW]`` bias: for a 1024-pixel image's global blocks that is a 64^4 tensor per head
(268 MB for 4 heads, 1 GB for ViT-H), and the einsum layouts make it non-contiguous, so it is
written twice (broadcast add, then a reshape copy) before attention reads it. Here the two terms
are made contiguous first (the sum is then a view, not a copy) and, when the bias would be large,
attention runs over bands of query rows so only one band's bias exists at a time. The arithmetic is
the same; weights and state-dict keys are unchanged.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers.models.sam.modeling_sam import SamVisionSdpaAttention

BAND_BYTES = 32 * 2**20  # the largest bias one attention call gets


class BandedRelPosAttention(SamVisionSdpaAttention):
    reuse_bias_buffer = True

    def forward(self, hidden_states: torch.Tensor, output_attentions=False):
        if output_attentions or not self.use_rel_pos:
            return super().forward(hidden_states, output_attentions)
        batch, height, width, _ = hidden_states.shape
        heads = self.num_attention_heads
        qkv = self.qkv(hidden_states).reshape(batch, height * width, 3, heads, -1).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)  # [batch, heads, HW, head_dim]
        rel_h_pos = self.get_rel_pos(height, height, self.rel_pos_h)
        rel_w_pos = self.get_rel_pos(width, width, self.rel_pos_w)
        grid_q = query.reshape(batch, heads, height, width, -1)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, rel_h_pos).contiguous()
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, rel_w_pos).contiguous()

        row_bytes = batch * heads * width * height * width * query.element_size()
        rows = max(1, min(height, BAND_BYTES // max(1, row_bytes)))
        # Without autograd every band's bias is written into one buffer: a fresh tensor per band
        # paid page faults on first touch (a quarter of the encoder's time for 1024-pixel images).
        buffer = None
        if self.reuse_bias_buffer and not torch.is_grad_enabled() and rows < height:
            buffer = rel_h.new_empty((batch, heads, rows, width, height, width))
        outputs = []
        for top in range(0, height, rows):
            band = slice(top, min(height, top + rows))
            n = band.stop - band.start
            terms = (rel_h[:, :, band, :, :, None], rel_w[:, :, band, :, None, :])
            bias = torch.add(*terms, out=buffer[:, :, :n]) if buffer is not None else terms[0] + terms[1]
            bias = bias.view(batch, heads, n * width, height * width)
            outputs.append(F.scaled_dot_product_attention(
                query[:, :, band.start * width:band.stop * width], key, value, attn_mask=bias,
                scale=self.scale))
        out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
        out = out.view(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
        return self.proj(out), None


def use_banded_attention(sam) -> None:
    """Swap every SDPA attention of ``sam``'s image encoder for :class:`BandedRelPosAttention` (in
    place; parameters are kept). Eager attention (asked for to read attention maps) is left alone."""
    for module in sam.vision_encoder.modules():
        if type(module) is SamVisionSdpaAttention:
            module.__class__ = BandedRelPosAttention
