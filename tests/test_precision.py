"""fp32 / bf16 / fp16 loading: every part in the asked dtype, and a query runs."""

import numpy as np
import pytest
import torch

from lisa.inference.pipeline import LisaPipeline, pick_device


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precisions(tiny_ckpt, precision, dtype):
    pipe = LisaPipeline.from_pretrained(tiny_ckpt, precision=precision, device="cpu", max_new_tokens=3, progress=False)
    dtypes = {p.dtype for p in pipe.model.parameters()}
    assert dtypes == {dtype}
    img = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    result = pipe(img, "What is in the picture?")
    assert result.timings["tokens"] == len(result.output_ids)


def test_device_selection():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")


def test_the_precision_table_names_and_errors():
    from lisa.precision import PRECISIONS, default_precision, half_dtype, to_dtype

    assert PRECISIONS == ("fp32", "bf16", "fp16")
    assert [to_dtype(p) for p in PRECISIONS] == [torch.float32, torch.bfloat16, torch.float16]
    assert to_dtype("bfloat16") is torch.bfloat16 and to_dtype(None) is None
    assert to_dtype(torch.float16) is torch.float16
    assert [half_dtype(p) for p in (None, "fp32", "bf16", "fp16")] == [None, None, torch.bfloat16, torch.float16]
    assert default_precision(True) == "bf16" and default_precision(False) == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'fp8'; choose fp32, bf16 or fp16"):
        to_dtype("fp8")
