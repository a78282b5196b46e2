"""One sample through a trained detector, and its picture: predictions over the GT beside the front
camera (part 1's BEV drawing)."""

from __future__ import annotations

from pathlib import Path


def predict_sample(checkpoint, dataroot, version: str, token: str):
    """(SampleGT, MapPrediction) of one sample."""
    import torch

    from ..data.nuscenes import NuScenesMapDataset
    from ..errors import MapDataError
    from ..gt.build import sample_gt
    from ..gt.sample import sample_frame
    from ..model.io import load_detector
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


def draw_prediction(dataroot, gt, pred, score_threshold: float = 0.3):
    from PIL import Image

    from ..spec import CLASSES
    from ..viz.bev import beside, draw_bev
    from .predictor import as_eval_vectors

    vectors = [(CLASSES[int(c)], r) for c, r in zip(gt.labels, gt.raw)]
    preds = as_eval_vectors({gt.token: pred})[gt.token]
    front = Path(dataroot) / gt.cameras[0].path
    camera = Image.open(front) if front.is_file() else None
    return beside(draw_bev(vectors, preds, score_threshold), camera, f"{gt.scene}  {gt.token[:8]}  prediction")
