"""Image preprocessing against transformers 4.31 CLIPImageProcessor goldens and SAM's rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.images import synthetic_image
from lisa.constants import SAM_MEAN, SAM_STD
from lisa.preprocess import as_rgb_array, clip_preprocess, postprocess_masks, sam_preprocess, sam_resize_shape

GOLDEN = Path(__file__).parent / "fixtures" / "clip_oracle.npz"


def _golden_cases():
    with np.load(GOLDEN) as z:
        for key in z.files:  # e.g. "a_97x131_seed0_s224"
            _, hw, seed, size = key.split("_")
            h, w = map(int, hw.split("x"))
            yield pytest.param(h, w, int(seed[4:]), int(size[1:]), z[key], id=key)


@pytest.mark.parametrize("h,w,seed,size,expected", list(_golden_cases()))
def test_clip_preprocess_matches_transformers_431(h, w, seed, size, expected):
    out = clip_preprocess(synthetic_image(h, w, seed), size)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert tuple(out.shape) == expected.shape == (3, size, size)
    assert np.abs(out.numpy() - expected).max() < 1e-5


def test_golden_file_has_all_required_images():
    with np.load(GOLDEN) as z:
        keys = set(z.files)
    assert {k.split("_s")[-1] for k in keys} == {"224", "336"}
    assert len([k for k in keys if k.endswith("_s224")]) == 3


def test_clip_preprocess_accepts_pil_and_grey(tmp_path):
    from PIL import Image

    img = synthetic_image(60, 90, 3)
    from_pil = clip_preprocess(as_rgb_array(Image.fromarray(img)), 224)
    assert torch.equal(from_pil, clip_preprocess(img, 224))
    grey = as_rgb_array(img[:, :, 0])
    assert grey.shape == (60, 90, 3)
    out = clip_preprocess(grey, 224)
    # the three channels see identical pixels, so they differ only by the per-channel mean/std
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(3, 1, 1)
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(3, 1, 1)
    raw = out * std + mean
    assert torch.allclose(raw[0], raw[1], atol=1e-5) and torch.allclose(raw[0], raw[2], atol=1e-5)


@pytest.mark.parametrize("hw,expected", [
    ((480, 640), (768, 1024)),
    ((640, 480), (1024, 768)),
    ((1024, 1024), (1024, 1024)),
    ((333, 500), (682, 1024)),   # 681.98 -> 682
    ((5, 2048), (3, 1024)),      # 2.5 rounds half up (Python's round() would give 2)
    ((2048, 1), (1024, 1)),      # 0.5 -> 1
    ((97, 131), (758, 1024)),    # 758.2 -> 758
    ((1, 1), (1024, 1024)),
])
def test_sam_resize_shape_rounds_half_up(hw, expected):
    assert sam_resize_shape(*hw) == expected


def test_sam_preprocess_normalises_and_pads():
    h, w = 480, 640
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:, : w // 2] = (200, 30, 90)
    img[:, w // 2:] = (10, 250, 128)
    sam = sam_preprocess(img)
    assert sam.resize == (768, 1024) and sam.original_size == (480, 640)
    assert tuple(sam.pixels.shape) == (3, 1024, 1024) and sam.pixels.dtype == torch.float32
    mean, std = torch.tensor(SAM_MEAN), torch.tensor(SAM_STD)
    left = (torch.tensor([200.0, 30.0, 90.0]) - mean) / std
    right = (torch.tensor([10.0, 250.0, 128.0]) - mean) / std
    assert torch.allclose(sam.pixels[:, 100, 100], left, atol=1e-5)
    assert torch.allclose(sam.pixels[:, 767, 1023], right, atol=1e-5)
    assert torch.count_nonzero(sam.pixels[:, 768:, :]) == 0  # bottom padding is exactly zero
    tall = sam_preprocess(np.full((640, 480, 3), 255, dtype=np.uint8))
    assert tall.resize == (1024, 768)
    assert torch.count_nonzero(tall.pixels[:, :, 768:]) == 0  # right padding
    assert torch.allclose(tall.pixels[:, 1023, 767], (255 - mean) / std, atol=1e-5)


def test_postprocess_masks_shape_and_threshold():
    resize, original = (768, 1024), (480, 640)
    low = torch.full((2, 1, 256, 256), -10.0)
    low[0, 0, :192, :128] = 10.0   # mask 0: left half of the image area (1024 canvas -> 256 grid)
    low[1, 0, 200:, :] = 10.0      # mask 1: only the padding rows below the image
    out = postprocess_masks(low.to(torch.bfloat16), resize, original)
    assert tuple(out.shape) == (2, 480, 640) and out.dtype == torch.float32
    mask = out > 0
    assert mask[0, :, :318].all() and not mask[0, :, 322:].any()
    assert not mask[1].any()
