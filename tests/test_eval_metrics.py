"""gIoU / cIoU against hand computations on crafted masks (the original validation's formulas)."""

import numpy as np
import pytest
import torch

from lisa.evaluation.metrics import SampleResult, intersection_union, mask_iou, summarize
from lisa.evaluation.runner import ground_truth


def t(rows):
    return torch.tensor(rows, dtype=torch.int64)


def test_intersection_union_excludes_ignore_pixels():
    gt = t([[1, 1, 0, 255],
            [0, 1, 0, 255]])
    pred = t([[1, 0, 1, 1],
              [0, 1, 1, 1]])
    i, u = intersection_union(pred, gt)
    # counted pixels: the first three columns. fg: pred {(0,0),(0,2),(1,1),(1,2)}, gt {(0,0),(0,1),(1,1)}
    assert i.tolist() == [1.0, 2.0]  # bg both at (1,0); fg both at (0,0),(1,1)
    assert u.tolist() == [2 + 3 - 1, 4 + 3 - 2]


def test_empty_target_and_empty_prediction_is_a_perfect_match():
    gt = torch.zeros((3, 3), dtype=torch.int64)
    i, u = intersection_union(gt.clone(), gt)
    assert u[1] == 0
    assert mask_iou(i, u)[1] == pytest.approx(1.0)
    # empty target but a predicted pixel: IoU 0
    pred = gt.clone()
    pred[0, 0] = 1
    i, u = intersection_union(pred, gt)
    assert mask_iou(i, u)[1] == 0.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        intersection_union(torch.zeros((2, 3)), torch.zeros((3, 2)))


def test_giou_and_ciou_match_hand_computation():
    a = SampleResult(0, "a.jpg", ["q"])
    # mask 1: 4 gt pixels, prediction covers 2 of them + 2 outside -> I=2, U=6
    gt1 = torch.zeros((4, 4), dtype=torch.int64)
    gt1[0, :4] = 1
    p1 = torch.zeros((4, 4), dtype=torch.int64)
    p1[0, :2] = 1
    p1[1, :2] = 1
    a.add(p1, gt1)
    b = SampleResult(1, "b.jpg", ["q1", "q2"])
    # mask 2: perfect on 3 pixels with an ignored region that the prediction covers
    gt2 = torch.zeros((4, 4), dtype=torch.int64)
    gt2[3, :3] = 1
    gt2[:2, :] = 255
    p2 = torch.zeros((4, 4), dtype=torch.int64)
    p2[3, :3] = 1
    p2[:2, :] = 1
    b.add(p2, gt2)
    # mask 3: empty target, empty prediction
    b.add(torch.zeros((4, 4), dtype=torch.int64), torch.zeros((4, 4), dtype=torch.int64))
    m = summarize([a, b])
    ious = [2 / (6 + 1e-5), 3 / (3 + 1e-5), 0 / 1e-5 + 1.0]
    assert m["num_masks"] == 3 and m["num_images"] == 2
    assert m["giou"] == pytest.approx(sum(ious) / (3 + 1e-5), abs=1e-12)
    assert m["ciou"] == pytest.approx((2 + 3 + 0) / (6 + 3 + 0 + 1e-10), abs=1e-12)
    assert a.to_dict()["intersection"] == [2] and a.to_dict()["union"] == [6]


def test_ground_truth_marks_the_ignore_map():
    masks = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    label = torch.tensor([[0, 255], [255, 1]])
    gt = ground_truth({"masks": masks, "label": label})
    assert gt.tolist() == [[[1, 255], [255, 1]]]


def test_seg_rate_reported_for_generated_answers():
    s = SampleResult(0, "x.jpg", ["a", "b"])
    z = torch.zeros((2, 2), dtype=torch.int64)
    s.add(z, z)
    s.add(z, z)
    s.seg_counts = [1, 0]
    m = summarize([s])
    assert m["seg_rate"] == 0.5 and m["multi_seg_rate"] == 0.0
    assert np.isclose(m["giou"], 2 / (2 + 1e-5))
