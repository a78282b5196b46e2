"""Hungarian matching over equivalent point orders, and the set losses."""

import numpy as np
import pytest
import torch

from helpers.threads import one_torch_thread
from lisa.map.model.losses import LossWeights, SetCriterion
from lisa.map.model.matching import HungarianMatcher
from lisa.map.model.targets import make_targets
from lisa.map.spec import NUM_POINTS, normalize, resample


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def _line(a, b):
    return resample(np.array([a, b], dtype=np.float64), NUM_POINTS).astype(np.float32)


def _ring(x0, y0, w, h):
    raw = np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h], [x0, y0]], dtype=np.float64)
    pts = resample(raw, NUM_POINTS).astype(np.float32)
    pts[-1] = pts[0]
    return pts


def _perfect(points_m, labels, num_queries=5, big=50.0):
    """Logits and points of a prediction that is exactly the GT in its first queries."""
    logits = torch.full((1, num_queries, 4), -big)
    logits[0, :, 3] = big  # the rest: no-object
    pts = torch.full((1, num_queries, NUM_POINTS, 2), 0.5)
    for i, (p, c) in enumerate(zip(points_m, labels)):
        logits[0, i] = -big
        logits[0, i, c] = big
        pts[0, i] = torch.from_numpy(normalize(p))
    return logits, pts


def test_reversed_line_costs_the_same_and_is_matched_in_its_own_order():
    line = _line((-10, -20), (5, 25))
    matcher = HungarianMatcher()
    logits, pts = _perfect([line], [0])
    fwd = make_targets([0], line[None], [False])
    rev = make_targets([0], line[::-1].copy()[None], [False])
    c_fwd, _ = matcher.cost(logits[0], pts[0], fwd)
    c_rev, order = matcher.cost(logits[0], pts[0], rev)
    torch.testing.assert_close(c_fwd, c_rev)
    assert int(order[0, 0]) == 1  # the reversed GT's second order (reversed again) is the prediction's
    m = matcher(logits, pts, [rev])[0]
    assert m.queries.tolist() == [0] and m.gts.tolist() == [0]
    torch.testing.assert_close(rev.orders[0, int(m.orders[0])], pts[0, 0])


def test_ring_starting_elsewhere_costs_the_same():
    ring = _ring(-5, -5, 6, 8)
    shifted = np.concatenate([np.roll(ring[:-1], -7, axis=0), np.roll(ring[:-1], -7, axis=0)[:1]])
    backwards = shifted[::-1].copy()
    matcher = HungarianMatcher()
    logits, pts = _perfect([ring], [1])
    costs = [matcher.cost(logits[0], pts[0], make_targets([1], p[None], [True]))[0][0, 0]
             for p in (ring, shifted, backwards)]
    assert costs[0] == pytest.approx(float(costs[1]), abs=1e-4) == pytest.approx(float(costs[2]), abs=1e-4)
    # without the ring's orders the shifted start would cost a lot
    as_open = matcher.cost(logits[0], pts[0], make_targets([1], shifted[None], [False]))[0][0, 0]
    assert float(as_open) > float(costs[0]) + 1.0


def test_matching_assigns_each_gt_to_its_query():
    a, b = _line((-10, -25), (-10, 25)), _line((10, -25), (10, 25))
    logits, pts = _perfect([b, a], [2, 0])  # query 0 holds b, query 1 holds a
    tgt = make_targets([0, 2], np.stack([a[::-1], b]), [False, False])
    m = HungarianMatcher()(logits, pts, [tgt])[0]
    assert dict(zip(m.gts.tolist(), m.queries.tolist())) == {0: 1, 1: 0}


def test_losses_zero_for_a_perfect_prediction_and_grow_with_a_shift():
    lines = [_line((-10, -20), (5, 25)), _ring(0, 0, 4, 6)]
    labels = [0, 1]
    tgt = make_targets(labels, np.stack([lines[0][::-1], lines[1]]), [False, True])
    crit = SetCriterion(3, LossWeights())
    logits, pts = _perfect(lines, labels)
    perfect = crit([{"pred_logits": logits, "pred_points": pts}], [tgt])
    for k in ("loss_cls", "loss_pts", "loss_dir", "loss_total"):
        assert float(perfect[k]) == pytest.approx(0.0, abs=1e-6), k
    totals, pts_losses = [], []
    for shift in (0.005, 0.02, 0.08):
        moved = pts.clone()
        moved[0, :2, :, 0] += shift
        moved[0, :2, ::2, 1] += shift  # a zig-zag also turns the directions
        out = crit([{"pred_logits": logits, "pred_points": moved}], [tgt])
        totals.append(float(out["loss_total"]))
        pts_losses.append(float(out["loss_pts"]))
        assert float(out["loss_dir"]) > 0
    assert 0 < totals[0] < totals[1] < totals[2]
    assert pts_losses[0] == pytest.approx(1.5 * 0.005, rel=1e-3)  # |dx| + |dy| averaged over points


def test_classification_loss_penalises_wrong_classes_and_missed_objects():
    line = _line((-10, -20), (5, 25))
    tgt = make_targets([0], line[None], [False])
    crit = SetCriterion(3, LossWeights())
    logits, pts = _perfect([line], [0])
    good = float(crit([{"pred_logits": logits, "pred_points": pts}], [tgt])["loss_cls"])
    wrong = logits.clone()
    wrong[0, 0] = torch.tensor([-50.0, 50.0, -50.0, -50.0])  # a crossing instead of a divider
    bad = float(crit([{"pred_logits": wrong, "pred_points": pts}], [tgt])["loss_cls"])
    assert good < 1e-6 < bad


def test_empty_targets_keep_the_graph():
    crit = SetCriterion(3)
    logits = torch.zeros(2, 5, 4, requires_grad=True)
    pts = torch.full((2, 5, NUM_POINTS, 2), 0.5, requires_grad=True)
    empty = make_targets([], np.zeros((0, NUM_POINTS, 2)), [])
    out = crit([{"pred_logits": logits, "pred_points": pts}], [empty, empty])
    out["loss_total"].backward()
    assert logits.grad is not None and pts.grad is not None and float(out["loss_pts"]) == 0.0
