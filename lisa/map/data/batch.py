"""Samples and batches of the map detector.

A sample is ``{"token": str, "images": [V, 3, H, W] float (CLIP-normalised), "targets": MapTargets}``;
instead of ``images`` it may carry ``features [V, P, C]``, the frozen vision tower's output (the
CLIP tower never changes during training, so a data set can compute it once). A batch stacks the
images (or features) and keeps the targets and tokens as lists.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..model.targets import MapTargets, make_targets

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_normalize(images: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` in [0, 1] -> CLIP's input normalisation."""
    mean = images.new_tensor(CLIP_MEAN)[:, None, None]
    std = images.new_tensor(CLIP_STD)[:, None, None]
    return (images - mean) / std


def collate(samples: list[dict]) -> dict:
    batch = {"tokens": [s["token"] for s in samples], "targets": [s["targets"] for s in samples]}
    for key in ("images", "features"):
        if all(key in s for s in samples):
            batch[key] = torch.stack([s[key] for s in samples])
    if "images" not in batch and "features" not in batch:
        raise ValueError("samples carry neither images nor features")
    return batch


class TensorMapDataset(Dataset):
    """Samples held in memory: camera tensors (or features) and per-instance GT.

    ``instances[i]``: ``(labels [N], points [N, P, 2] metres, closed [N])`` of sample i."""

    def __init__(self, tokens: list[str], instances: list, images: torch.Tensor | None = None,
                 features: torch.Tensor | None = None, targets: list[MapTargets] | None = None):
        if (images is None) == (features is None):
            raise ValueError("give images or features")
        self.tokens = list(tokens)
        self.inputs_key = "images" if images is not None else "features"
        self.inputs = images if images is not None else features
        self.targets = list(targets) if targets is not None else [make_targets(*inst) for inst in instances]
        if not (len(self.tokens) == len(self.targets) == len(self.inputs)):
            raise ValueError(f"{len(self.tokens)} tokens, {len(self.targets)} GT entries, {len(self.inputs)} inputs")

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict:
        return {"token": self.tokens[i], self.inputs_key: self.inputs[i], "targets": self.targets[i]}


def random_instances(rng: np.random.Generator, n: int, num_points: int = 20) -> tuple:
    """``n`` random GT instances in metres (open lines and closed rings), for tests and benchmarks."""
    from ..spec import RANGE, resample

    labels, points, closed = [], [], []
    for _ in range(n):
        c = int(rng.integers(0, 3))
        ring = c == 1 and bool(rng.integers(0, 2))
        start = rng.uniform(RANGE[:2], RANGE[2:]) * 0.8
        if ring:
            w, h = rng.uniform(2, 6, size=2)
            raw = start + np.array([[0, 0], [w, 0], [w, h], [0, h], [0, 0]])
        else:
            raw = start + np.cumsum(rng.normal(0, 4, size=(4, 2)), axis=0)
        pts = np.clip(resample(raw, num_points), RANGE[:2], RANGE[2:])
        if ring:
            pts[-1] = pts[0]
        labels.append(c)
        points.append(pts)
        closed.append(ring)
    return np.array(labels), np.array(points, dtype=np.float32).reshape(n, num_points, 2), np.array(closed)


def batch_targets(targets: list[MapTargets], device) -> list[MapTargets]:
    return [t.to(device) for t in targets]


def random_dataset(num_samples: int, seed: int = 0, image_size: int = 64, num_cameras: int = 6,
                   max_instances: int = 6) -> TensorMapDataset:
    """Random camera tensors and random GT, the same for the same seed (tests, benchmarks)."""
    rng = np.random.default_rng(seed)
    instances = [random_instances(rng, int(rng.integers(1, max_instances + 1))) for _ in range(num_samples)]
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(num_samples, num_cameras, 3, image_size, image_size, generator=g)
    return TensorMapDataset([f"sample{i:04d}" for i in range(num_samples)], instances, images=images)
