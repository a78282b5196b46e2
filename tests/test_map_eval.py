"""Chamfer AP (MapTR's protocol): hand-checkable cases, a brute-force cross-check, malformed inputs."""

import json

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from shapely.geometry import LineString

from lisa.map import spec
from lisa.map.errors import MapDataError
from lisa.map.evaluation import evaluate, read_gt_vectors, read_predictions
from lisa.map.evaluation.ap import voc_area_ap
from lisa.map.evaluation.chamfer import NO_MATCH, pair_scores
from lisa.map.evaluation.cli import main as eval_main


def hline(y, x0=-10.0, x1=10.0, n=5):
    return np.stack([np.linspace(x0, x1, n), np.full(n, y)], axis=1)


def vline(x, y0=-20.0, y1=20.0, n=7):
    return np.stack([np.full(n, x), np.linspace(y0, y1, n)], axis=1)


def square(cx, cy, r):
    return np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r], [cx - r, cy + r], [cx - r, cy - r]])


GTS = {
    "s1": [("divider", hline(0.0)), ("divider", hline(6.0)), ("boundary", vline(-12.0)),
           ("ped_crossing", square(0, 20, 2))],
    "s2": [("boundary", vline(12.0)), ("divider", hline(-15.0, n=3)), ("ped_crossing", square(5, -20, 3))],
    "s3": [],
}


def as_preds(gts, score=1.0, shift=(0.0, 0.0)):
    return {t: [(c, np.asarray(p) + shift, score) for c, p in v] for t, v in gts.items()}


def test_perfect_predictions_score_one():
    m = evaluate(GTS, as_preds(GTS))
    assert m["mAP"] == 1.0 and m["mAP_all_classes"] == 1.0
    assert all(v == 1.0 for c in spec.CLASSES for v in m["ap"][c].values())
    assert m["num_gt"] == {"divider": 3, "ped_crossing": 2, "boundary": 2} == m["num_pred"]
    assert set(m["ap"]["divider"]) == {"0.5", "1.0", "1.5"}


def test_shift_of_0_7_m_fails_at_0_5_and_passes_at_1_0_and_1_5():
    gts = {"a": [("divider", hline(0.0)), ("divider", hline(8.0))], "b": [("boundary", vline(3.0))]}
    preds = {"a": [("divider", hline(0.7), 0.9), ("divider", hline(8.7), 0.8)], "b": [("boundary", vline(3.7), 0.5)]}
    m = evaluate(gts, preds)
    for cls in ("divider", "boundary"):
        assert m["ap"][cls] == {"0.5": 0.0, "1.0": 1.0, "1.5": 1.0}
        assert m["class_ap"][cls] == pytest.approx(2 / 3)
    assert m["mAP"] == pytest.approx(2 / 3)


def test_a_duplicate_prediction_is_a_false_positive():
    gts = {"a": [("divider", hline(0.0)), ("divider", hline(10.0))]}
    preds = {"a": [("divider", hline(0.0), 0.9), ("divider", hline(0.0), 0.8), ("divider", hline(10.0), 0.7)]}
    # TP, FP, TP: precision 1 up to recall 0.5, then 2/3 at recall 1
    assert evaluate(gts, preds)["ap"]["divider"]["0.5"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_a_class_without_gt_is_left_out_of_map():
    gts = {"a": [("divider", hline(0.0))]}
    preds = {"a": [("divider", hline(0.0), 0.9), ("boundary", vline(5.0), 0.4)]}
    m = evaluate(gts, preds)
    assert m["num_gt"]["boundary"] == 0 and m["class_ap"]["boundary"] == 0.0
    assert m["mAP"] == 1.0 and m["mAP_all_classes"] == pytest.approx(1 / 3)


def test_greedy_rule_uses_the_argmax_gt_even_when_it_is_taken():
    # G1 at y = 0, G2 at y = 0.6; P2 (y = 0.2) is 0.2 m from G1 (taken by P1) and 0.4 m from the free G2
    gts = {"a": [("divider", hline(0.0)), ("divider", hline(0.6))]}
    preds = {"a": [("divider", hline(0.0), 0.9), ("divider", hline(0.2), 0.8)]}
    ap = evaluate(gts, preds)["ap"]["divider"]["0.5"]
    assert ap == pytest.approx(0.5)  # "best free GT" matching would give 1.0


def test_a_collapsed_prediction_fails_the_buffer_gate():
    gts = {"a": [("divider", hline(0.0))]}
    dot = np.repeat([[0.0, 0.0]], 20, axis=0)  # on the GT line, but all points equal
    assert evaluate(gts, {"a": [("divider", dot, 1.0)]})["class_ap"]["divider"] == 0.0
    lines = spec.resample_lines([dot, hline(0.0)], spec.EVAL_POINTS)
    assert pair_scores(lines[:1], lines[1:], np.array([0]), np.array([0]))[0] == NO_MATCH


def test_far_apart_lines_do_not_match_even_with_a_huge_threshold():
    lines = spec.resample_lines([hline(0.0), hline(4.5)], spec.EVAL_POINTS)  # buffers 2 m each: 4.5 m apart
    assert pair_scores(lines[:1], lines[1:], np.array([0]), np.array([0]))[0] == NO_MATCH
    lines = spec.resample_lines([hline(0.0), hline(3.9)], spec.EVAL_POINTS)
    assert pair_scores(lines[:1], lines[1:], np.array([0]), np.array([0]))[0] == pytest.approx(-3.9)


def random_case(seed):
    rng = np.random.default_rng(seed)
    gts, preds = {}, {}
    for s in range(12):
        g, p = [], []
        for _ in range(rng.integers(0, 6)):
            cls = spec.CLASSES[rng.integers(3)]
            pts = np.cumsum(rng.normal(0, 3, (rng.integers(2, 8), 2)), axis=0)
            g.append((cls, pts))
            if rng.random() < 0.8:
                p.append((cls, pts + rng.normal(0, 0.6, pts.shape), float(rng.random())))
        for _ in range(rng.integers(0, 4)):
            p.append((spec.CLASSES[rng.integers(3)], np.cumsum(rng.normal(0, 3, (4, 2)), axis=0), float(rng.random())))
        gts[f"s{s}"], preds[f"s{s}"] = g, p
    return gts, preds


def brute_force_ap(gts, preds, cls, thr):
    """A plain per-sample loop, written independently of the library."""
    records, n_gt = [], 0
    for token, gvs in gts.items():
        g = [spec.resample(p, 100) for c, p in gvs if c == cls]
        n_gt += len(g)
        ps = sorted([(sc, spec.resample(p, 100)) for c, p, sc in preds.get(token, []) if c == cls], key=lambda x: -x[0])
        taken = [False] * len(g)
        for score, pl in ps:
            scores = []
            for gl in g:
                a = LineString(pl).buffer(2.0, cap_style="flat", join_style="mitre")
                b = LineString(gl).buffer(2.0, cap_style="flat", join_style="mitre")
                if a.intersects(b):
                    d = cdist(pl, gl)
                    scores.append(-(d.min(1).mean() + d.min(0).mean()) / 2)
                else:
                    scores.append(-100.0)
            tp = False
            if scores and max(scores) >= -thr and not taken[int(np.argmax(scores))]:
                taken[int(np.argmax(scores))] = tp = True
            records.append((score, tp))
    records.sort(key=lambda r: -r[0])
    tp = np.cumsum([r[1] for r in records])
    fp = np.cumsum([not r[1] for r in records])
    if not records:
        return 0.0
    return voc_area_ap(tp / max(n_gt, 1e-9), tp / np.maximum(tp + fp, 1e-9))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_brute_force_implementation(seed):
    gts, preds = random_case(seed)
    m = evaluate(gts, preds)
    for cls in spec.CLASSES:
        for thr in spec.THRESHOLDS:
            assert m["ap"][cls][f"{thr:.1f}"] == pytest.approx(brute_force_ap(gts, preds, cls, thr), abs=1e-9)


def test_reversed_point_order_changes_nothing():
    gts, preds = random_case(3)
    rev = {t: [(c, p[::-1], s) for c, p, s in v] for t, v in preds.items()}
    rev_gt = {t: [(c, p[::-1]) for c, p in v] for t, v in gts.items()}
    assert evaluate(gts, preds) == evaluate(rev_gt, rev)


def test_voc_area_ap():
    assert voc_area_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 1 / 3)
    assert voc_area_ap(np.array([]), np.array([])) == 0.0


def test_resample_lines_matches_resample():
    rng = np.random.default_rng(0)
    lines = [np.cumsum(rng.normal(size=(n, 2)), axis=0) for n in (2, 2, 3, 7, 7, 20)]
    lines.append(np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 1.0], [2.0, 1.0]]))  # repeated points
    batch = spec.resample_lines(lines, 100)
    for line, got in zip(lines, batch):
        assert np.allclose(got, spec.resample(line, 100), atol=1e-9)


def write_preds(path, results, key="results"):
    path.write_text(json.dumps({key: {t: {"vectors": v} for t, v in results.items()}}))


@pytest.mark.parametrize("vector, pattern", [
    ({"pts": [[0, 0], [1, 1]], "cls_name": "lane", "confidence_level": 0.5}, "unknown class 'lane'"),
    ({"pts": [[0, 0]], "cls_name": "divider", "confidence_level": 0.5}, "1 point"),
    ({"pts": [[0, 0], [float("nan"), 1]], "cls_name": "divider", "confidence_level": 0.5}, "NaN"),
    ({"pts": [[0, 0], [1, 1]], "cls_name": "divider"}, "'confidence_level' must be a finite number"),
    ({"pts": [[0, 0, 0], [1, 1, 1]], "cls_name": "divider", "confidence_level": 0.5}, r"shape \[2, 3\]"),
])
def test_malformed_predictions_name_sample_and_vector(tmp_path, vector, pattern):
    path = tmp_path / "pred.json"
    ok = {"pts": [[0, 0], [1, 0], [2, 0]], "cls_name": "divider", "confidence_level": 0.9}
    write_preds(path, {"tok1": [ok, vector]})
    with pytest.raises(MapDataError, match=rf"pred.json: sample tok1, vector 1: .*{pattern}"):
        read_predictions(path)


def test_eval_cli_reads_map_results_and_maptr_gt_json(tmp_path, capsys):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"GTs": [{"sample_token": t, "vectors": [
        {"pts": p.tolist(), "pts_num": len(p), "cls_name": c, "type": spec.CLASS_INDEX[c]} for c, p in v]}
        for t, v in GTS.items()]}))
    pred = tmp_path / "pred.json"
    write_preds(pred, {t: [{"pts": p.tolist(), "type": spec.CLASS_INDEX[c], "confidence_level": 0.8} for c, p in v]
                       for t, v in GTS.items() if t != "s3"}, key="map_results")
    out = tmp_path / "metrics.json"
    assert eval_main(["--gt", str(gt), "--predictions", str(pred), "--output", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["mAP"] == 1.0 and set(metrics) >= {"ap", "class_ap", "mAP", "mAP_all_classes", "num_gt", "num_pred"}
    printed = capsys.readouterr()
    assert "ped_crossing" in printed.out and "mAP 1.0000" in printed.out
    assert "1 of 3 GT samples have no predictions" in printed.err
    assert read_gt_vectors(gt).keys() == GTS.keys()


def test_predictions_for_unknown_samples_are_an_error(tmp_path, capsys):
    with pytest.raises(MapDataError, match="not in the GT .*first: zzz"):
        evaluate(GTS, {"zzz": [("divider", hline(0.0), 1.0)]})
    pred = tmp_path / "p.json"
    pred.write_text(json.dumps({"something": {}}))
    assert eval_main(["--gt", str(tmp_path / "gt.json"), "--predictions", str(pred)]) == 2
    assert "does not exist" in capsys.readouterr().err
