"""Running a trained detector over samples: predictions in metres, MapTR's results JSON.

``predict`` decodes every query (see ``model/decode.py``: one instance per query, scored by its class
probability); evaluation then ranks them by that score, as MapTR's protocol wants every candidate.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.batch import collate
from ..model.decode import MapPrediction, decode


@torch.no_grad()
def predict(model, dataset, batch_size: int = 4, num_workers: int = 0, progress: bool = True,
            autocast_dtype: torch.dtype | None = None, score_threshold: float = 0.0) -> dict[str, MapPrediction]:
    """``{sample token: MapPrediction}`` for every sample of ``dataset`` (images or features)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, MapPrediction] = {}
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=num_workers)
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    try:
        for batch in tqdm(loader, desc="predict", unit="batch", disable=not progress, leave=False):
            inputs = {k: batch[k].to(device) for k in ("images", "features") if k in batch}
            with ctx:
                res = model(**inputs)
            for token, pred in zip(batch["tokens"], decode(res["pred_logits"], res["pred_points"],
                                                           score_threshold=score_threshold)):
                out[token] = pred
    finally:
        model.train(was_training)
    return out


def results_json(predictions: dict[str, MapPrediction], meta: dict | None = None) -> dict:
    """MapTR's results document: ``{"meta": {...}, "results": {token: {"vectors": [...]}}}``."""
    return {"meta": {"use_camera": True, "use_lidar": False, "output_format": "vector", **(meta or {})},
            "results": {t: {"vectors": p.to_vectors()} for t, p in predictions.items()}}


def as_eval_vectors(predictions: dict[str, MapPrediction]) -> dict[str, list]:
    """The evaluator's input: ``{token: [(class name, points, confidence)]}``."""
    from ..spec import CLASSES

    return {t: [(CLASSES[int(c)], pts, float(s)) for c, s, pts in zip(p.labels, p.scores, p.points)]
            for t, p in predictions.items()}
