"""Image preprocessing for the two visual streams (CLIP and SAM) and mask post-processing.

Each step reproduces the original pipeline:
- CLIP: shortest side to ``size`` (PIL bicubic, long side truncated), centre crop, 1/255, CLIP mean/std.
  An image so elongated that the resized long side would pass ``MAX_RESIZED_SIDE`` is resampled
  straight into the crop (values within 1/255 of the full resize, without its width x 224 buffer).
- SigLIP towers: the whole image to ``size`` x ``size`` (PIL bicubic), 1/255, mean = std = 0.5.
- LLaVA-1.5's ``image_aspect_ratio "pad"``: the image first centred on a square of the tower's
  mean colour (so nothing is cropped away), then the tower's processor; an image whose long side
  passes ``MAX_RESIZED_SIDE`` is shrunk to it first, so the square stays bounded.
- SAM: longest side to ``size`` (PIL bilinear, round half up, at least 1 pixel), SAM mean/std on
  0..255, zero pad right/bottom.
- masks: bilinear to the padded square, crop to the resized size, bilinear to the original size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .constants import CLIP_MEAN, CLIP_STD, SAM_MEAN, SAM_STD, SIGLIP_MEAN, SIGLIP_STD

MAX_RESIZED_SIDE = 8192


def as_rgb_array(image) -> np.ndarray:
    """Accept a PIL image or an HxWx3 / HxW uint8 array; return an HxWx3 uint8 RGB array.
    (The pipeline reads PIL images with :func:`lisa.images.to_rgb_array`: upright, 16-bit scaled.)"""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 RGB image, got an array of shape {arr.shape}")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def clip_preprocess(image: np.ndarray, size: int = 224, crop_size: int | None = None) -> torch.Tensor:
    """[3, crop, crop] float32 tensor as CLIPImageProcessor (openai/clip-vit-*) produces it."""
    crop = crop_size or size
    h, w = image.shape[:2]
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = size, int(size * long / short)
    new_h, new_w = (new_short, new_long) if h <= w else (new_long, new_short)
    top = (new_h - crop) // 2
    left = (new_w - crop) // 2
    if new_long > MAX_RESIZED_SIDE and top >= 0 and left >= 0:
        # only the centre crop is kept: resample that region of the source alone
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
        arr = np.asarray(Image.fromarray(image).resize((crop, crop), Image.BICUBIC, box=box))
        new_h = new_w = crop
        top = left = 0
    else:
        arr = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))
    if top < 0 or left < 0:  # image smaller than the crop after resizing: pad like HF does
        padded = np.zeros((max(new_h, crop), max(new_w, crop), 3), dtype=arr.dtype)
        ph, pw = (padded.shape[0] - new_h) // 2, (padded.shape[1] - new_w) // 2
        padded[ph:ph + new_h, pw:pw + new_w] = arr
        arr, top, left = padded, (padded.shape[0] - crop) // 2, (padded.shape[1] - crop) // 2
    arr = arr[top:top + crop, left:left + crop].astype(np.float32) * (1 / 255)
    arr = (arr - np.asarray(CLIP_MEAN, dtype=np.float32)) / np.asarray(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def siglip_preprocess(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """[3, size, size] float32 tensor as SiglipImageProcessor produces it (no aspect kept, no crop)."""
    arr = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC)).astype(np.float32) * (1 / 255)
    arr = (arr - np.asarray(SIGLIP_MEAN, dtype=np.float32)) / np.asarray(SIGLIP_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def shrink_long_side(image: np.ndarray, limit: int) -> np.ndarray:
    """``image`` with its long side brought down to ``limit`` (PIL bicubic) when it is longer: a
    40000x1000 image padded to a square would be a 4.8 GB canvas, only to be resized to the tower's
    few hundred pixels. Images within the limit are returned as they are."""
    h, w = image.shape[:2]
    if max(h, w) <= limit:
        return image
    scale = limit / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def pad_to_square(image: np.ndarray, fill: tuple[int, int, int]) -> np.ndarray:
    """The image centred on a square canvas of colour ``fill`` (LLaVA-1.5's ``expand2square``:
    the offset of the shorter side is rounded down)."""
    h, w = image.shape[:2]
    if h == w:
        return image
    side = max(h, w)
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    canvas[:] = np.asarray(fill, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top:top + h, left:left + w] = image
    return canvas


@dataclass(frozen=True)
class VisionInput:
    """How an RGB image becomes the vision tower's input: ``kind`` "clip" or "siglip" (whose
    processor), ``size`` (its input side), ``pad`` (LLaVA-1.5 ``image_aspect_ratio "pad"``)."""

    size: int = 224
    kind: str = "clip"
    pad: bool = False

    @property
    def mean(self) -> tuple[float, float, float]:
        return SIGLIP_MEAN if self.kind == "siglip" else CLIP_MEAN

    @property
    def fill(self) -> tuple[int, int, int]:
        """The padding colour: the processor's mean as 0..255 integers (truncated, as LLaVA)."""
        return tuple(int(m * 255) for m in self.mean)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if self.pad:
            image = pad_to_square(shrink_long_side(image, MAX_RESIZED_SIDE), self.fill)
        if self.kind == "siglip":
            return siglip_preprocess(image, self.size)
        return clip_preprocess(image, self.size)


def sam_resize_shape(h: int, w: int, long_side: int = 1024) -> tuple[int, int]:
    scale = long_side * 1.0 / max(h, w)
    # a 3000x1 image would round its short side to 0 pixels: keep at least one
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


@dataclass
class SamInput:
    pixels: torch.Tensor  # [3, S, S] float32, normalised and padded
    resize: tuple[int, int]  # (h, w) after the longest-side resize, before padding
    original_size: tuple[int, int]  # (H, W)


def sam_preprocess(image: np.ndarray, size: int = 1024, device: torch.device | str | None = None) -> SamInput:
    """``device``: where the canvas is built. On a GPU only the resized uint8 pixels cross the bus
    (a quarter of the float canvas) and the normalising runs there; the arithmetic is the same."""
    h, w = image.shape[:2]
    new_h, new_w = sam_resize_shape(h, w, size)
    resized = torch.from_numpy(np.array(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR)))
    # normalise in place inside the zero-padded canvas (same arithmetic as (x - mean) / std, then pad)
    x = torch.zeros((3, size, size), dtype=torch.float32, device=device)
    view = x[:, :new_h, :new_w]
    view.copy_(resized.to(x.device).permute(2, 0, 1))
    view.sub_(torch.tensor(SAM_MEAN, device=x.device).view(3, 1, 1))
    view.div_(torch.tensor(SAM_STD, device=x.device).view(3, 1, 1))
    return SamInput(x, (new_h, new_w), (h, w))


def postprocess_masks(low_res: torch.Tensor, resize: tuple[int, int], original_size: tuple[int, int],
                      image_size: int = 1024) -> torch.Tensor:
    """Low-resolution mask logits [k, 1, s, s] -> logits [k, H, W] at the original size (float32)."""
    x = low_res.float()
    x = F.interpolate(x, (image_size, image_size), mode="bilinear", align_corners=False)
    x = x[..., : resize[0], : resize[1]]
    x = F.interpolate(x, tuple(original_size), mode="bilinear", align_corners=False)
    return x[:, 0]
