"""One sample through a trained detector (``lisa map predict``; ``lisa.map.viz.overlay`` draws it)."""

from __future__ import annotations

from pathlib import Path


def predict_sample(checkpoint, dataroot, version: str, token: str):
    """(SampleGT, MapPrediction) of one sample."""
    import torch

    from ..checkpoint.io import load_detector
    from ..data.nuscenes import NuScenesMapDataset
    from ..errors import MapDataError
    from ..gt.build import sample_gt
    from ..gt.sample import sample_frame
    from ..nuscenes.tables import NuScenesTree
    from .predictor import predict

    tree = NuScenesTree(dataroot, version)
    try:
        sample = tree.get("sample", token)
    except (KeyError, MapDataError):
        raise MapDataError(f"sample {token!r} is not in {Path(dataroot) / version}") from None
    gt = sample_gt(sample_frame(tree, sample, tree.get("scene", sample["scene_token"])), dataroot)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model = load_detector(checkpoint, device=device)
    data = NuScenesMapDataset(dataroot, [gt], model.config.image_size, model.config.cameras)
    return gt, predict(model, data, batch_size=1, progress=False)[token]
