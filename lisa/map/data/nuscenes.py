"""The detector's samples from a nuScenes tree: the six camera images of each sample and its map GT,
from part 1's GT cache entries (``SampleGT``; ``lisa.map.inference.gt_cache`` finds or builds the cache).

Images are resized to the vision tower's square input and CLIP-normalised; cameras come in the
detector's camera order (the cache's channel names are checked, not assumed).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import MapDataError
from ..model.targets import make_targets
from .batch import TensorMapDataset, clip_normalize

log = logging.getLogger("lisa.map.data")


def load_camera(path: Path, size: int) -> torch.Tensor:
    try:
        with Image.open(path) as img:
            img = img.convert("RGB").resize((size, size), Image.BILINEAR)
    except (OSError, ValueError) as e:
        raise MapDataError(f"camera image {path} cannot be read ({e})") from None
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


class NuScenesMapDataset(Dataset):
    """Samples of a GT cache: ``{"token", "images" [V, 3, S, S], "targets"}``."""

    def __init__(self, dataroot, samples, image_size: int, cameras: tuple[str, ...]):
        self.dataroot = Path(dataroot)
        self.samples = list(samples)
        self.image_size = int(image_size)
        self.cameras = tuple(cameras)
        self.targets = [make_targets(s.labels, s.points, s.closed) for s in self.samples]
        self.camera_index = []
        for s in self.samples:
            channels = [c.channel for c in s.cameras]
            missing = [c for c in self.cameras if c not in channels]
            if missing:
                raise MapDataError(f"sample {s.token}: the GT cache has no {', '.join(missing)} camera")
            self.camera_index.append([channels.index(c) for c in self.cameras])

    def __len__(self) -> int:
        return len(self.samples)

    def image_paths(self, i: int) -> list[Path]:
        s = self.samples[i]
        return [self.dataroot / s.cameras[k].path for k in self.camera_index[i]]

    def __getitem__(self, i: int) -> dict:
        images = torch.stack([load_camera(p, self.image_size) for p in self.image_paths(i)])
        return {"token": self.samples[i].token, "images": clip_normalize(images), "targets": self.targets[i]}


@torch.no_grad()
def precompute_features(dataset: NuScenesMapDataset, model, batch_size: int = 8, progress: bool = True,
                        num_workers: int = 0) -> TensorMapDataset:
    """The frozen vision tower's features of every sample, held in memory: training then skips CLIP
    (same numbers, as long as the tower stays frozen and the images are not augmented)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from .batch import collate

    device = next(model.parameters()).device
    feats = []
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=num_workers)
    for batch in tqdm(loader, desc="vision features", unit="batch", disable=not progress):
        feats.append(model.encode_images(batch["images"].to(device)).cpu())
    out = TensorMapDataset([s.token for s in dataset.samples], [], features=torch.cat(feats), targets=dataset.targets)
    return out
