"""Render dataset items as PNGs (image, mask overlay, question and answer) for ``lisa data check --show``."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .files import read_rgb

COLOURS = ((255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 200, 0), (200, 64, 255), (0, 220, 220))
MIN_WIDTH = 384


def _font(size: int = 14):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Fill each mask with its colour (the first mask covering a pixel wins, so identical masks do
    not blend into a new colour) and outline every mask in its colour."""
    out = image.astype(np.float32).copy()
    painted = np.zeros(image.shape[:2], dtype=bool)
    for k, m in enumerate(masks):
        on = (m > 0) & ~painted
        out[on] = (1 - alpha) * out[on] + alpha * np.asarray(COLOURS[k % len(COLOURS)], np.float32)
        painted |= m > 0
    out = out.clip(0, 255).astype(np.uint8)
    for k, m in enumerate(masks):
        contours, _ = cv2.findContours((m > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, COLOURS[k % len(COLOURS)], 2)
    return out


def dialogue_lines(conversation: str, width: int) -> list[str]:
    """The user / assistant turns of a prompt, without the system text, wrapped to ``width`` chars."""
    start = conversation.find("USER:")
    text = conversation[start:] if start >= 0 else conversation
    text = text.replace("</s>", "\n").replace(" ASSISTANT:", "\nASSISTANT:")
    lines = []
    for para in text.split("\n"):
        lines.extend(textwrap.wrap(para, width) or [""])
    return lines


def render_item(item: dict, path: str | os.PathLike) -> Path:
    """Write one PNG: the image with every mask overlaid (one colour per [SEG], in order), then
    each conversation, its colour swatch matching its mask(s)."""
    image = read_rgb(item["image_path"])
    masks = item["masks"].numpy() if hasattr(item["masks"], "numpy") else np.asarray(item["masks"])
    h, w = image.shape[:2]
    scale = max(1, int(np.ceil(MIN_WIDTH / w)))  # tiny images are enlarged (nearest) to be readable
    if scale > 1:
        image = image.repeat(scale, axis=0).repeat(scale, axis=1)
        masks = masks.repeat(scale, axis=1).repeat(scale, axis=2)
    pil = Image.fromarray(overlay(image, masks))
    font = _font()
    chars = max(30, pil.width // 8)
    blocks = [dialogue_lines(c, chars) for c in item["conversations"]]
    line_h = 18
    text_h = sum(len(b) + 1 for b in blocks) * line_h + 8
    canvas = Image.new("RGB", (pil.width, pil.height + text_h), (255, 255, 255))
    canvas.paste(pil, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y, mask_k = pil.height + 4, 0
    for conv, block in zip(item["conversations"], blocks):
        n_seg = conv.count("[SEG]")
        colour = COLOURS[mask_k % len(COLOURS)] if n_seg else (160, 160, 160)
        mask_k += n_seg
        draw.rectangle([4, y + 3, 14, y + 13], fill=colour)
        for line in block:
            draw.text((20, y), line, fill=(0, 0, 0), font=font)
            y += line_h
        y += line_h
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
