"""Experiment: a dense pretraining of the demo SAM's image encoder on the shapes' kind maps.

    python bench/sam_pretrain.py --data DIR --steps 700 --out enc.pt [--keep_colour]
    python bench/demo_experiment.py --data DIR --sam_init enc.pt ...

Question for issue #5: the demo model does not learn the *kind* of a shape (circle / square /
triangle) within its budget. Is that the encoder (its features have no kind) or the rest (the prompt
and the mask decoder do not use it)? LISA starts from an encoder pretrained on SA-1B; the demo's
starts from lisa/demo/init.py (colour and position only). This script trains the encoder to label
the pixels of SAM's low-resolution mask grid by kind (the Mapillary-format set written by
lisa/demo/semantic.py; ``--semantic N`` writes N images when DIR has none) through a temporary 1x1
convolution that is then dropped, and saves SAM's state dict for ``--sam_init``.
``--keep_colour`` leaves the colour, constant and position channels of the init untouched;
``--through_upscaling`` reads kind from the mask decoder's per-pixel features (what a mask is a
dot product with) instead of the encoder's tokens, and so also trains the decoder's upscaling;
``--with_colour`` classifies kind x colour and the background instead of kind; ``--open N``
builds the model with N open channels and ``--open_only`` reads kind from those alone;
``--constant_lr`` keeps the learning rate after the warmup instead of decaying it;
``--hold_colour W`` adds W x the mean squared change of the colour, constant and position outputs
against the untrained encoder's, so that the features the mask decoder's colour path reads stay.

Prints the seconds taken and the kind accuracy on the shape pixels over the last 10% of the steps.
What it measured (700 steps, 1 thread, about 2.5 minutes): with ``--constant_lr --open 8
--open_only`` 0.96 (0.89 with ``--keep_colour``), against 0.54 after 500 decaying steps (all
channels, no open channels); with
``--with_colour --through_upscaling`` 0.48 after 600. LISA training from those encoders did not
answer kind questions better (bench/demo_experiment.py: 0.26 to 0.30 on colour_shape_kind after
500 steps), and with the encoder frozen the colour questions failed (IoU 0.10 with
``--keep_colour``, 0.26 without, after 250 steps): keeping the weights that write the colour
channels does not keep the normalised features the mask decoder reads. With ``--hold_colour 10
--constant_lr --open_only`` (0.94 after 700 steps, 125 s at 2 threads) and the encoder frozen
(``demo_experiment --sam_init X --train_sam_encoder 0``), the kind questions are learned: 0.70 on
colour_shape_kind after 400 steps, against 0.33 with the encoder trained on (which loses the kind).
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

from lisa.data.files import read_rgb
from lisa.data.masks import IGNORE_LABEL
from lisa.data.sem_seg import sem_seg_source
from lisa.data.synth import COLOURS
from lisa.demo.init import FIXED, MID_FIXED, PIXEL_FIXED, pixel_features
from lisa.preprocess import sam_preprocess

UPSCALE = 4  # SAM's mask decoder draws masks at 4x its token grid


def _item(source, i: int, image_size: int, grid: int, with_colour: bool = False
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's input pixels and the class of each low-resolution mask pixel: the kind (255 off the
    shapes), or with ``with_colour`` kind x colour (the shape's palette colour nearest the pixel's)
    and one more class for the background."""
    image = read_rgb(source.pairs[i][0])
    label = source._label(i, image.shape[:2])  # class index, 255 = not asked about
    sam = sam_preprocess(image, image_size)
    h, w = sam.resize
    stride = image_size // grid

    def centres(array: np.ndarray, fill: int) -> np.ndarray:
        resized = np.array(Image.fromarray(array).resize((w, h), Image.NEAREST))
        canvas = np.full((image_size, image_size) + array.shape[2:], fill, np.uint8)
        canvas[:h, :w] = resized
        return canvas[stride // 2::stride, stride // 2::stride][:grid, :grid]  # the centre of each mask pixel

    target = centres(label.astype(np.uint8), IGNORE_LABEL).astype(np.int64)
    if with_colour:
        rgb = centres(image, 0).astype(np.float32)
        palette = np.array(list(COLOURS.values()), np.float32)
        colour = ((rgb[..., None, :] - palette) ** 2).sum(-1).argmin(-1)
        centre = np.arange(grid) * stride + stride // 2
        inside = (centre[:, None] < h) & (centre[None, :] < w)  # not SAM's padding
        target = np.where(target == IGNORE_LABEL, np.where(inside, len(source.classes) * len(palette), IGNORE_LABEL),
                          target * len(palette) + colour)
    return sam.pixels, torch.from_numpy(target)


def _colour_path(encoder, fixed: int) -> list[tuple[torch.Tensor, tuple]]:
    """(parameter, index) pairs that write the encoder's first ``fixed`` output channels: the colour,
    constant and position channels of :func:`lisa.demo.init.space_to_depth_init`, which the mask
    decoder's upscaling reads. Pretraining leaves them as they are (a kind-only loss would
    otherwise overwrite colour, which it does not need) and learns kind in the other channels."""
    rows = slice(0, fixed)
    out = [(encoder.patch_embed.projection.weight, (rows,)), (encoder.patch_embed.projection.bias, (rows,))]
    if encoder.pos_embed is not None:
        out.append((encoder.pos_embed, (..., rows)))
    for layer in encoder.layers:  # the residual branches' outputs into those channels
        for lin in (layer.attn.proj, layer.mlp.lin2):
            out += [(lin.weight, (rows,)), (lin.bias, (rows,))]
    neck = encoder.neck
    for module in (neck.conv1, neck.layer_norm1, neck.conv2, neck.layer_norm2):
        out += [(p, (rows,)) for p in module.parameters()]
    return out


def _upscaling_path(decoder) -> list[tuple[torch.Tensor, tuple]]:
    """The same for the mask decoder's upscaling (lisa/demo/init.py: MID_FIXED of its middle
    channels and PIXEL_FIXED of its pixel channels carry colour, constants and position)."""
    mid, last = slice(0, MID_FIXED), slice(0, PIXEL_FIXED)
    return [(decoder.upscale_conv1.weight, (slice(None), mid)), (decoder.upscale_conv1.bias, (mid,)),
            (decoder.upscale_layer_norm.weight, (mid,)), (decoder.upscale_layer_norm.bias, (mid,)),
            (decoder.upscale_conv2.weight, (slice(None), last)), (decoder.upscale_conv2.bias, (last,))]


def pretrain_sam_encoder(model, dataset_dir, steps: int, batch_size: int = 8, lr: float = 1e-3, seed: int = 0,
                         keep_colour: bool = False, through_upscaling: bool = False, with_colour: bool = False,
                         open_only: int = 0, constant_lr: bool = False, hold_colour: float = 0.0,
                         progress: bool = True) -> dict:
    """Train ``model.sam.vision_encoder`` (and, ``through_upscaling``, the mask decoder's upscaling)
    in place on the kind maps under ``dataset_dir`` (``mapillary``); returns the loss curve, the
    kind accuracy on the shape pixels of the last 10% of steps and the seconds taken."""
    if steps <= 0:
        return {"steps": 0, "seconds": 0.0, "loss": [], "final_pixel_accuracy": 0.0}
    source = sem_seg_source(str(dataset_dir), "mapillary")
    if len(source) == 0:
        raise ValueError(f"no kind maps under {dataset_dir}/mapillary to pretrain SAM's encoder on")
    encoder = model.sam.vision_encoder
    image_size = int(model.config.sam_image_size)
    decoder = model.sam.mask_decoder
    channels = decoder.upscale_conv1.weight.shape[0]
    g = torch.Generator().manual_seed(seed)
    per_kind = len(COLOURS) if with_colour else 1  # classes per kind (kind x colour)
    n_classes = len(source.classes) * per_kind + (1 if with_colour else 0)
    # kind is read from the decoder's per-pixel features (as a mask is), or from the encoder's
    # tokens (one logit per class and mask pixel of the token)
    in_channels = decoder.upscale_conv2.weight.shape[1] if through_upscaling else channels
    out_channels = n_classes if through_upscaling else UPSCALE * UPSCALE * n_classes
    read = slice(None)
    if open_only:  # only the first open_only open channels (lisa.demo.init), which reach the mask
        start = PIXEL_FIXED if through_upscaling else FIXED
        read, in_channels = slice(start, start + open_only), open_only
    head = nn.Conv2d(in_channels, out_channels, 1)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * head.in_channels ** -0.5)
        head.bias.zero_()
    kept = _colour_path(encoder, FIXED) if keep_colour else []
    if keep_colour and through_upscaling:
        kept += _upscaling_path(decoder)
    reference = None
    if hold_colour:  # an L2 pull of the colour, constant and position outputs to the untrained encoder's
        reference = copy.deepcopy(encoder).eval().requires_grad_(False)
    rng = np.random.default_rng([seed, 11])
    was_training = encoder.training
    encoder.train()
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    if through_upscaling:
        params += [p for n, p in decoder.named_parameters() if n.startswith(("upscale_conv", "upscale_layer_norm"))]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 1.0 if constant_lr else
        max(0.05, (steps - s) / (steps - warmup + 1)))
    losses, hits, counted = [], 0, 0
    t0 = time.perf_counter()
    grid = UPSCALE * (image_size // encoder.patch_embed.projection.weight.shape[-1])
    for step in tqdm(range(steps), desc="pretrain SAM", unit="step", disable=not progress):
        idx = rng.integers(len(source), size=batch_size)
        pixels, targets = zip(*(_item(source, int(i), image_size, grid, with_colour) for i in idx))
        pixels = torch.stack(pixels)
        features = encoder(pixels).last_hidden_state
        if through_upscaling:
            logits = head(pixel_features(decoder, features)[:, read])
        else:
            logits = F.pixel_shuffle(head(features[:, read]), UPSCALE)
        target = torch.stack(targets)
        loss = F.cross_entropy(logits, target, ignore_index=IGNORE_LABEL)
        if reference is not None:
            with torch.no_grad():
                held = reference(pixels).last_hidden_state[:, :FIXED]
            loss = loss + hold_colour * F.mse_loss(features[:, :FIXED], held)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for param, index in kept:
            if param.grad is not None:
                param.grad[index] = 0
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(round(loss.item(), 4))
        if step >= steps - max(1, steps // 10):
            shape = (target != IGNORE_LABEL) & (target < len(source.classes) * per_kind)
            hits += int((logits.argmax(1)[shape] // per_kind == target[shape] // per_kind).sum())
            counted += int(shape.sum())
    encoder.train(was_training)
    return {"steps": steps, "seconds": round(time.perf_counter() - t0, 1), "loss": losses,
            "final_pixel_accuracy": round(hits / max(counted, 1), 4)}


def main(argv=None) -> int:
    import argparse
    from pathlib import Path

    from lisa.demo.model import OPEN_CHANNELS, build_demo_model, build_demo_tokenizer, demo_importance
    from lisa.demo.semantic import write_semantic_shapes

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the demo data folder (lisa.demo.run.prepare_all_data)")
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--semantic", type=int, default=1000, help="kind maps to write when DATA has none")
    ap.add_argument("--keep_colour", action="store_true",
                    help="leave the colour, constant and position channels of lisa/demo/init.py untouched")
    ap.add_argument("--through_upscaling", action="store_true",
                    help="read kind from the mask decoder's upscaled pixel features (also trains the upscaling)")
    ap.add_argument("--with_colour", action="store_true",
                    help="classify kind x colour (and background) instead of kind: keeps colour in the features")
    ap.add_argument("--open", type=int, default=OPEN_CHANNELS, help="open_channels of the SAM init (lisa.demo.init)")
    ap.add_argument("--open_only", action="store_true", help="the head reads only the open channels")
    ap.add_argument("--constant_lr", action="store_true", help="no decay after the warmup")
    ap.add_argument("--hold_colour", type=float, default=0.0,
                    help="weight of an L2 loss keeping the colour/constant/position outputs as the init's")
    ap.add_argument("--out", required=True, help="where to save SAM's state dict (for demo_experiment --sam_init)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not (Path(args.data) / "mapillary" / "config_v2.0.json").is_file():
        write_semantic_shapes(args.data, args.semantic, args.seed)
    tok = build_demo_tokenizer(args.data, args.out + ".tok")
    model = build_demo_model(tok, seed=args.seed, importance=demo_importance(tok, args.data), open_channels=args.open)
    summary = pretrain_sam_encoder(model, args.data, args.steps, batch_size=args.batch, lr=args.lr, seed=args.seed,
                                   keep_colour=args.keep_colour, through_upscaling=args.through_upscaling,
                                   with_colour=args.with_colour, open_only=args.open if args.open_only else 0,
                                   constant_lr=args.constant_lr, hold_colour=args.hold_colour)
    print(f"{summary['steps']} steps in {summary['seconds']:.0f} s; kind pixel accuracy (last 10% of steps) "
          f"{summary['final_pixel_accuracy']:.3f}")
    torch.save(model.sam.state_dict(), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
