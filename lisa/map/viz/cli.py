"""``lisa map show``: draw one sample's GT map vectors (and predictions) beside its front and back cameras."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from lisa.map import spec
from lisa.map.errors import MapDataError
from lisa.map.viz.bev import beside, draw_bev

SHOWN = ("CAM_FRONT", "CAM_BACK")


def render_sample(dataroot: str, version: str, token: str, predictions: str | None = None,
                  score_threshold: float = 0.3) -> Image.Image:
    """The picture ``lisa map show`` writes, computed from the tree (GT) and a results JSON (predictions)."""
    from lisa.map.evaluation.io import read_predictions
    from lisa.map.gt.build import sample_gt
    from lisa.map.gt.sample import sample_frame
    from lisa.map.nuscenes.tables import NuScenesTree

    tree = NuScenesTree(dataroot, version)
    sample = tree.get("sample", token)
    scene = tree.get("scene", sample["scene_token"])
    gt = sample_gt(sample_frame(tree, sample, scene), dataroot)
    vectors = [(spec.CLASSES[int(lab)], r) for lab, r in zip(gt.labels, gt.raw)]
    preds = None
    if predictions:
        all_preds = read_predictions(predictions)
        if token not in all_preds:
            raise MapDataError(f"{predictions} has no predictions for sample {token}")
        preds = all_preds[token]
    # the front camera, and the back one below it: the BEV reaches 30 m both ways
    shown = [c for c in gt.cameras if c.channel in SHOWN and (Path(dataroot) / c.path).is_file()]
    images = [Image.open(Path(dataroot) / c.path) for c in shown]
    titles = [f"{scene['name']}  {token[:8]}  {c.channel}" for c in shown]
    return beside(draw_bev(vectors, preds, score_threshold), images, titles)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lisa map show", description=__doc__)
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", default="v1.0-mini")
    p.add_argument("--sample", required=True, help="sample token")
    p.add_argument("--predictions", default=None, help="MapTR results JSON: draw this sample's predictions over the GT")
    p.add_argument("--score_threshold", type=float, default=0.3, help="predictions below this confidence are not drawn")
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        img = render_sample(args.dataroot, args.version, args.sample, args.predictions, args.score_threshold)
    except MapDataError as e:
        print(f"lisa map show: {e}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    img.save(args.out)
    print(f"{args.out}: {img.width}x{img.height}")
    return 0
