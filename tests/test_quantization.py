"""4- and 8-bit loading through bitsandbytes on CPU: only the LLM decoder is quantized."""

import numpy as np
import pytest
import torch

pytest.importorskip("bitsandbytes")

from lisa.inference.pipeline import LisaPipeline  # noqa: E402


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantized_pipeline_runs_on_cpu(tiny_ckpt, bits):
    import bitsandbytes as bnb

    img = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    ref = LisaPipeline.from_pretrained(tiny_ckpt, precision="fp32", device="cpu", max_new_tokens=4, progress=False)
    q = LisaPipeline.from_pretrained(tiny_ckpt, precision="fp32", device="cpu", max_new_tokens=4, progress=False,
                                     **{f"load_in_{bits}": True})
    kind = bnb.nn.Linear4bit if bits == "4bit" else bnb.nn.Linear8bitLt
    layer = q.model.llm.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, kind) and isinstance(layer.mlp.down_proj, kind)
    for name, mod in [("lm_head", q.model.llm.lm_head), ("projector", q.model.mm_projector),
                      ("seg head", q.model.text_hidden_fcs[0][0]),
                      ("sam", q.model.sam.mask_decoder.transformer.layers[0].self_attn.q_proj)]:
        assert type(mod) is torch.nn.Linear, name
    result = q(img, "Segment the red circle.")
    assert len(result.output_ids) >= 1
    # quantization error stays small on the next-token logits of the same prompt
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        a = ref.model.llm(ids).logits
        b = q.model.llm(ids).logits.float()
    assert (a - b).abs().max() / a.abs().max() < 0.25
