"""Reading predictions (MapTR's results JSON) and GT (the lisa GT cache or MapTR's GT JSON) for evaluation.

Predictions: ``{"results": {sample_token: {"vectors": [{"pts": [[x, y], ...], "cls_name": ..,
"confidence_level": ..}]}}}`` (``map_results`` is read too; ``type``, a class index, stands in for a
missing ``cls_name``). Any number of points (two or more) per vector, metres, LiDAR frame. Every
malformed vector is an error naming the file, sample and vector.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lisa.map import spec
from lisa.map.errors import MapDataError
from lisa.map.evaluation.ap import GTVector, PredVector
from lisa.map.gt.cache import read_cache


def _load_json(path: Path, what: str):
    if not path.is_file():
        raise MapDataError(f"{what} file {path} does not exist")
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MapDataError(f"{what} file {path} is not valid JSON: {e}") from None


def _vector(v, where: str, need_score: bool) -> tuple:
    if not isinstance(v, dict):
        raise MapDataError(f"{where}: must be an object with pts and cls_name")
    cls = v.get("cls_name")
    if cls is None and isinstance(v.get("type"), int) and 0 <= v["type"] < len(spec.CLASSES):
        cls = spec.CLASSES[v["type"]]
    if cls not in spec.CLASSES:
        raise MapDataError(f"{where}: unknown class {cls!r} (known: {', '.join(spec.CLASSES)})")
    try:
        pts = np.asarray(v["pts"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise MapDataError(f"{where}: 'pts' must be a list of [x, y] points") from None
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise MapDataError(f"{where}: 'pts' must be a list of [x, y] points, got shape {list(pts.shape)}")
    if len(pts) < 2:
        raise MapDataError(f"{where}: {len(pts)} point(s); a vector needs at least 2")
    if not np.isfinite(pts).all():
        raise MapDataError(f"{where}: 'pts' holds NaN or infinite values")
    if not need_score:
        return cls, pts
    score = v.get("confidence_level")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise MapDataError(f"{where}: 'confidence_level' must be a finite number, got {score!r}")
    return cls, pts, float(score)


def read_predictions(path: str | Path) -> dict[str, list[PredVector]]:
    """``{sample_token: [(class name, points [N, 2], confidence)]}`` from a MapTR results JSON."""
    path = Path(path)
    doc = _load_json(path, "predictions")
    results = doc.get("results", doc.get("map_results")) if isinstance(doc, dict) else None
    if not isinstance(results, dict):
        raise MapDataError(f'predictions file {path} must hold {{"results": {{sample_token: {{"vectors": [...]}}}}}}')
    out = {}
    for token, entry in results.items():
        vectors = entry.get("vectors") if isinstance(entry, dict) else None
        if not isinstance(vectors, list):
            raise MapDataError(f"{path}: sample {token}: needs a 'vectors' list")
        out[token] = [_vector(v, f"{path}: sample {token}, vector {i}", True) for i, v in enumerate(vectors)]
    return out


def _starts_like_json(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(64).lstrip()[:1] in (b"{", b"[")


def read_gt_vectors(path: str | Path) -> dict[str, list[GTVector]]:
    """``{sample_token: [(class name, raw points [N, 2])]}`` from a GT cache or a MapTR GT JSON."""
    path = Path(path)
    if path.is_file() and _starts_like_json(path):
        doc = _load_json(path, "GT")
        gts = doc.get("GTs") if isinstance(doc, dict) else None
        if not isinstance(gts, list):
            raise MapDataError(f'GT file {path} must hold {{"GTs": [{{"sample_token", "vectors": [...]}}]}}')
        out = {}
        for i, entry in enumerate(gts):
            if not isinstance(entry, dict) or not isinstance(entry.get("sample_token"), str):
                raise MapDataError(f"{path}: GTs[{i}] needs a 'sample_token'")
            token = entry["sample_token"]
            out[token] = [_vector(v, f"{path}: sample {token}, vector {j}", False)
                          for j, v in enumerate(entry.get("vectors", []))]
        return out
    cache = read_cache(path)
    return {s.token: [(spec.CLASSES[int(lab)], r) for lab, r in zip(s.labels, s.raw)] for s in cache.samples}
