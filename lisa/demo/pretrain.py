"""A dense pretraining of the demo SAM's image encoder: the kind of every shape pixel.

LISA starts from a SAM pretrained on SA-1B, whose encoder already tells objects apart. The demo's
starts from :mod:`lisa.demo.init` (colour and position only) and, trained by LISA's losses alone,
does not learn a shape's *kind* (circle / square / triangle) within the budget: "the red square"
beside a red circle is answered with both (IoU about 0.3). This stage teaches kind on the kind maps
of :mod:`lisa.demo.semantic` before ``lisa train`` runs, as SA-1B pretraining does for the real model:

- kind is read by a temporary 1x1 convolution (dropped afterwards) from the encoder's *open*
  channels only (:data:`lisa.demo.init.FIXED` onward), the ones the init passes to the mask
  decoder's pixel features, so that what is learned there reaches the masks;
- an L2 pull (``hold``) keeps the colour, constant and position channels at the untrained
  encoder's outputs, which the mask decoder's colour path reads; without it kind overwrites colour;
- the learning rate stays constant after the warm-up (kind appears late, around step 500 of 700).

Measured (bench/sam_pretrain.py and bench/demo_experiment.py, issue #5 notes): 0.94 kind accuracy on
the shape pixels after 700 steps; the LISA training that follows (with the encoder at 0.1x the
learning rate, or it forgets kind) then answers the kind questions (0.84 against 0.32).
"""

from __future__ import annotations

import copy
import time

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
from .init import FIXED

UPSCALE = 4  # SAM's mask decoder draws masks at 4x its token grid
SEMANTIC_SET = "mapillary"  # the format lisa.demo.semantic writes the kind maps in


def kind_targets(source, i: int, image_size: int, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's input pixels of image ``i`` of ``source`` and the kind (class index) at the centre of
    each of its ``grid`` x ``grid`` low-resolution mask pixels; ``IGNORE_LABEL`` off the shapes."""
    image = read_rgb(source.pairs[i][0])
    label = source.label(i, image.shape[:2])
    sam = sam_preprocess(image, image_size)
    h, w = sam.resize
    stride = image_size // grid
    resized = np.array(Image.fromarray(label.astype(np.uint8)).resize((w, h), Image.NEAREST))
    canvas = np.full((image_size, image_size), IGNORE_LABEL, np.uint8)
    canvas[:h, :w] = resized
    target = canvas[stride // 2::stride, stride // 2::stride][:grid, :grid]
    return sam.pixels, torch.from_numpy(target.astype(np.int64))


def pretrain_sam_encoder(model, dataset_dir, steps: int, *, open_channels: int, batch_size: int = 8,
                         lr: float = 1e-3, hold: float = 10.0, seed: int = 0, progress: bool = True) -> dict:
    """Train ``model.sam.vision_encoder`` in place on the kind maps under ``dataset_dir``. Returns
    the loss curve, the kind accuracy on the shape pixels over the last 10% of the steps
    (``final_pixel_accuracy``) and the seconds taken."""
    if steps <= 0:
        return {"steps": 0, "seconds": 0.0, "loss": [], "final_pixel_accuracy": None}
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
    g = torch.Generator().manual_seed(seed)
    head = nn.Conv2d(open_channels, UPSCALE * UPSCALE * n_classes, 1)  # one logit per class and mask pixel
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
    losses, hits, counted = [], 0, 0
    t0 = time.perf_counter()
    for step in tqdm(range(steps), desc="pretrain SAM encoder", unit="step", disable=not progress):
        idx = rng.integers(len(source), size=batch_size)
        pixels, targets = zip(*(kind_targets(source, int(i), image_size, grid) for i in idx))
        pixels, target = torch.stack(pixels), torch.stack(targets)
        features = encoder(pixels).last_hidden_state
        logits = F.pixel_shuffle(head(features[:, FIXED:FIXED + open_channels]), UPSCALE)
        loss = F.cross_entropy(logits, target, ignore_index=IGNORE_LABEL)
        if reference is not None:
            with torch.no_grad():
                held = reference(pixels).last_hidden_state[:, :FIXED]
            loss = loss + hold * F.mse_loss(features[:, :FIXED], held)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(round(loss.item(), 4))
        if step >= steps - max(1, steps // 10):
            shape = target != IGNORE_LABEL
            hits += int((logits.argmax(1)[shape] == target[shape]).sum())
            counted += int(shape.sum())
    encoder.train(was_training)
    return {"steps": steps, "seconds": round(time.perf_counter() - t0, 1), "loss": losses,
            "final_pixel_accuracy": round(hits / max(counted, 1), 4)}
