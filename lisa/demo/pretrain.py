"""A dense pretraining of the demo SAM's image encoder: the kind and the size of every shape pixel.

LISA starts from a SAM pretrained on SA-1B, whose encoder already tells objects apart. The demo's
starts from :mod:`lisa.demo.init_weights` (colour and position only) and, trained by LISA's losses alone,
does not learn a shape's *kind* (circle / square / triangle) within the budget ("the red square"
beside a red circle is answered with both, IoU about 0.3), and compares sizes poorly ("the smallest
shape" 0.5). This stage teaches both on the kind maps of :mod:`lisa.demo.semantic_shapes` before
``lisa train`` runs, as SA-1B pretraining does for the real model:

- a temporary 1x1 convolution (dropped afterwards) reads, from the encoder's *open* channels only
  (:data:`lisa.demo.init_weights.FIXED` onward, the ones the init passes on to the mask decoder's pixel
  features), the kind of each low-resolution mask pixel and the log of its shape's area relative to
  the image (standardised; weight ``area``);
- an L2 pull (``hold``) keeps the colour, constant and position channels at the untrained
  encoder's outputs, which the mask decoder's colour path reads; without it kind overwrites colour;
- the learning rate stays constant after the warm-up (kind appears late in the pretraining).

The demo's 700 steps at 2e-3 learn kind and area as well as 900 steps at 1e-3, in less time; LISA
training then trains only the encoder's last layer and neck, at 0.3x its learning rate: with the
whole encoder at the full rate it forgets the kind (lisa/demo/recipe.py). The measurements behind
these choices are in docs/demo.md.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from ..data.files import read_rgb
from ..data.masks import IGNORE_LABEL
from ..data.sem_seg import sem_seg_source
from ..preprocess import sam_preprocess
from .init_weights import FIXED
from .semantic_shapes import INSTANCE_BASE, SEMANTIC_SET, instance_path

UPSCALE = 4  # SAM's mask decoder draws masks at 4x its token grid


def read_instances(label_path) -> np.ndarray:
    """The instance map (:func:`lisa.demo.semantic_shapes.instance_path`) of a kind map, as integers."""
    path = instance_path(label_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the instance map of {label_path} is missing (the shape areas the "
                                "pretraining learns come from it); write the set with lisa.demo.semantic_shapes")
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)


def log_area_map(instances: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Each shape pixel's log(area of its shape / image area); 0 off the shapes."""
    _, inverse, counts = np.unique(instances, return_inverse=True, return_counts=True)
    out = np.log(counts / instances.size)[inverse.reshape(instances.shape)].astype(np.float32)
    out[label == IGNORE_LABEL] = 0.0
    return out


def _grid_centres(array: np.ndarray, size: tuple[int, int], image_size: int, grid: int, fill) -> np.ndarray:
    """``array`` resized as SAM resizes its image (``size`` = (h, w)), padded, and read at the centre
    of each of the ``grid`` x ``grid`` low-resolution mask pixels."""
    h, w = size
    stride = image_size // grid
    resized = np.array(Image.fromarray(array).resize((w, h), Image.NEAREST))
    canvas = np.full((image_size, image_size), fill, array.dtype)
    canvas[:h, :w] = resized
    return canvas[stride // 2::stride, stride // 2::stride][:grid, :grid]


def shape_targets(source, i: int, image_size: int, grid: int, with_area: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """SAM's input pixels of image ``i`` of ``source``, and at each low-resolution mask pixel the
    kind (class index; ``IGNORE_LABEL`` off the shapes) and, ``with_area``, the log relative area
    of its shape (``None`` without: the instance map is then not read)."""
    image_path, label_path = source.pairs[i]
    image = read_rgb(image_path)
    label = source.label(i, image.shape[:2])
    sam = sam_preprocess(image, image_size)
    kind = _grid_centres(label.astype(np.uint8), sam.resize, image_size, grid, IGNORE_LABEL)
    area = None
    if with_area:
        area_map = log_area_map(read_instances(label_path), label)
        area = torch.from_numpy(_grid_centres(area_map, sam.resize, image_size, grid, 0.0).copy())
    return sam.pixels, torch.from_numpy(kind.astype(np.int64)), area


def area_statistics(source) -> tuple[float, float]:
    """Mean and standard deviation of the log relative shape area over the shape pixels of the set
    (the area target is standardised with them)."""
    values, weights = [], []
    for _, label_path in source.pairs:
        ids, counts = np.unique(read_instances(label_path), return_counts=True)
        shapes = ids % INSTANCE_BASE > 0
        total = counts.sum()
        values.append(np.log(counts[shapes] / total))
        weights.append(counts[shapes])
    v, w = np.concatenate(values), np.concatenate(weights).astype(np.float64)
    mean = float(np.average(v, weights=w))
    return mean, float(np.sqrt(np.average((v - mean) ** 2, weights=w))) or 1.0


@dataclass
class _PreparedImages:
    """The pretraining's inputs and targets of the images ``index`` (sorted), ready to stack."""
    index: np.ndarray
    pixels: torch.Tensor  # [n, 3, S, S] SAM input
    kinds: torch.Tensor  # [n, g, g] uint8 kind per low-res mask pixel
    areas: torch.Tensor | None  # [n, g, g] log relative shape area
    held: torch.Tensor | None  # [n, FIXED, h, w] the untrained encoder's held channels


def _prepare_images(source, index: np.ndarray, image_size: int, grid: int, with_area: bool,
                    reference: nn.Module | None, progress: bool, batch: int = 16) -> _PreparedImages:
    """Decode each drawn image once (a step would otherwise read, resize and encode with the
    reference encoder again every time an image is drawn: about 40% of a step)."""
    pixels, kinds, areas, held = [], [], [], []
    for i in tqdm(index, desc="prepare kind maps", unit="image", disable=not progress):
        px, kind, area = shape_targets(source, int(i), image_size, grid, with_area)
        pixels.append(px)
        kinds.append(kind.to(torch.uint8))
        areas.append(area)
    pixels_t = torch.stack(pixels)
    if reference is not None:
        with torch.no_grad():
            held = [reference(pixels_t[k:k + batch]).last_hidden_state[:, :FIXED]
                    for k in range(0, len(pixels_t), batch)]
    return _PreparedImages(index=index, pixels=pixels_t, kinds=torch.stack(kinds),
                           areas=torch.stack(areas) if with_area else None,
                           held=torch.cat(held) if reference is not None else None)


def pretrain_sam_encoder(model, dataset_dir, steps: int, *, open_channels: int, batch_size: int = 8,
                         lr: float = 1e-3, hold: float = 10.0, area: float = 0.3, seed: int = 0,
                         progress: bool = True) -> dict:
    """Train ``model.sam.vision_encoder`` in place on the kind maps under ``dataset_dir`` (and, with
    weight ``area``, on each shape pixel's standardised log relative shape area). Returns the loss
    curve, over the last 10% of the steps the kind accuracy on the shape pixels
    (``final_pixel_accuracy``) and the area's mean squared error in standard deviations
    (``final_area_mse``), and the seconds taken."""
    if steps <= 0:
        return {"steps": 0, "seconds": 0.0, "loss": [], "final_pixel_accuracy": None, "final_area_mse": None}
    if open_channels <= 0:
        raise ValueError("pretraining reads kind from the encoder's open channels: build the model with "
                         f"open_channels > 0 (got {open_channels})")
    source = sem_seg_source(str(dataset_dir), SEMANTIC_SET)
    if len(source) == 0:
        raise ValueError(f"no kind maps under {dataset_dir}/{SEMANTIC_SET} to pretrain SAM's encoder on")
    encoder = model.sam.vision_encoder
    image_size = int(model.config.sam_image_size)
    grid = UPSCALE * (image_size // encoder.patch_embed.projection.weight.shape[-1])
    n_classes = len(source.classes)
    area_mean, area_std = area_statistics(source) if area else (0.0, 1.0)
    outputs = n_classes + (1 if area else 0)  # per mask pixel: one logit per class (and the area)
    g = torch.Generator().manual_seed(seed)
    head = nn.Conv2d(open_channels, UPSCALE * UPSCALE * outputs, 1)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * open_channels ** -0.5)
        head.bias.zero_()
    reference = copy.deepcopy(encoder).eval().requires_grad_(False) if hold else None
    rng = np.random.default_rng([seed, 11])
    was_training = encoder.training
    encoder.train()
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    losses, hits, counted, area_errors = [], 0, 0, []
    t0 = time.perf_counter()
    draws = rng.integers(len(source), size=(steps, batch_size))
    cached = _prepare_images(source, np.unique(draws), image_size, grid, bool(area), reference, progress)
    for step in tqdm(range(steps), desc="pretrain SAM encoder", unit="step", disable=not progress):
        rows = torch.from_numpy(np.searchsorted(cached.index, draws[step]))
        pixels, target = cached.pixels[rows], cached.kinds[rows].long()
        features = encoder(pixels).last_hidden_state
        out = F.pixel_shuffle(head(features[:, FIXED:FIXED + open_channels]), UPSCALE)
        logits, shape = out[:, :n_classes], target != IGNORE_LABEL
        loss = F.cross_entropy(logits, target, ignore_index=IGNORE_LABEL)
        if area:
            log_area = cached.areas[rows]
            area_loss = F.mse_loss(out[:, n_classes][shape], (log_area[shape] - area_mean) / area_std)
            loss = loss + area * area_loss
        if reference is not None:
            loss = loss + hold * F.mse_loss(features[:, :FIXED], cached.held[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(round(loss.item(), 4))
        if step >= steps - max(1, steps // 10):
            hits += int((logits.argmax(1)[shape] == target[shape]).sum())
            counted += int(shape.sum())
            if area:
                area_errors.append(area_loss.item())
    encoder.train(was_training)
    return {"steps": steps, "seconds": round(time.perf_counter() - t0, 1), "loss": losses,
            "final_pixel_accuracy": round(hits / max(counted, 1), 4),
            "final_area_mse": round(float(np.mean(area_errors)), 4) if area_errors else None}
