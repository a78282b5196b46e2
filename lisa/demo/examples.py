"""Two example queries on a fresh synthetic image (one no data split uses), answered by the
exported model through :class:`~lisa.inference.pipeline.LisaPipeline`, with overlay images; and the
shapes examples the demo model folder carries for ``lisa app`` (``examples.json``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

COLOUR_WORDS = ("red", "green", "blue", "yellow")
RELATION_WORDS = ("largest", "biggest", "smallest", "leftmost", "rightmost", "topmost", "bottommost",
                  "left", "right", "top", "bottom", "highest", "lowest")


@dataclass
class ExampleResult:
    prompt: str
    answer: str
    iou: float | None  # against the generator's own mask of the target shape
    overlay: str


def prompt_for(query) -> str:
    """A prompt in the form the model was trained on (the ReasonSeg question templates)."""
    if query.is_sentence:
        return f"{query.text} Please output segmentation mask."
    return f"Can you segment the {query.text} in this image?"


def pick_queries(queries) -> list:
    """One query about colour (and kind) and one about size or position when the image has them."""
    def has(q, words):
        return any(w in q.text.lower().split() or w in q.text.lower() for w in words)
    colour = [q for q in queries if has(q, COLOUR_WORDS)]
    relation = [q for q in queries if has(q, RELATION_WORDS) and not has(q, COLOUR_WORDS)]
    chosen = [colour[0]] if colour else []
    chosen += relation[:1] if relation else [q for q in queries if q not in chosen][:1]
    return chosen[:2]


def _iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray) -> float:
    valid = ~ignore
    inter = np.logical_and(pred, gt)[valid].sum()
    union = np.logical_or(pred, gt)[valid].sum()
    return float(inter / union) if union else 1.0


def shapes_examples(out_dir: Path, n: int = 3) -> list[list[str]]:
    """Synthetic shapes images with questions they answer uniquely (what the demo model is trained on)."""
    from .shapes import sample_fresh_image

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(n):
        image, queries = sample_fresh_image(seed)
        path = out_dir / f"shapes_{seed}.png"
        image.save(path)
        for q in queries[:2]:
            text = q.text if q.is_sentence else f"Can you segment the {q.text} in this image?"
            rows.append([str(path), text])
    return rows


def run_examples(model_dir, out_dir, seed: int = 0, device: str = "cpu", progress: bool = False
                 ) -> list[ExampleResult]:
    """Answer two queries about ``sample_fresh(seed)``; write ``example_<i>.png``: the image, enlarged,
    beside its overlay."""
    from ..inference.pipeline import LisaPipeline
    from ..inference.visualize import picture
    from .shapes import sample_fresh

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image, shapes, queries = sample_fresh(seed)
    arr = np.asarray(image.convert("RGB"))
    image.save(out_dir / "example_image.png")
    pipe = LisaPipeline.from_pretrained(model_dir, precision="fp32", device=device, max_new_tokens=24,
                                        progress=progress)
    h, w = arr.shape[:2]
    results = []
    for i, query in enumerate(pick_queries(queries)):
        prompt = prompt_for(query)
        res = pipe(arr, prompt)
        gt = shapes[query.target].mask(h, w)
        ignore = np.zeros((h, w), bool)
        for j in query.ignore:
            ignore |= shapes[j].mask(h, w)
        iou = _iou(res.masks[0], gt, ignore) if res.masks else None
        path = out_dir / f"example_{i}.png"
        Image.fromarray(picture(arr, res.masks[:1])).save(path)
        results.append(ExampleResult(prompt, res.text, iou, str(path)))
    return results
