"""Chamfer-distance average precision of map vectors, as MapTR defines it.

Per class, over all samples: every prediction is scored against every GT vector of its sample
(``chamfer.pair_scores``); its best GT is the argmax of those scores (the first on ties), whether that GT
is taken or not. Going through the predictions by descending confidence, a prediction is a true positive
if and only if its best score passes the threshold (``score >= -threshold``) and its best GT is still
free; it then takes that GT. Everything else, duplicates included, is a false positive. A prediction
whose best GT is taken is a false positive even if another GT would have matched.

Because a GT can only be taken by predictions whose argmax it is, the greedy pass reduces to: among the
passing predictions in confidence order, the first one per best GT is the true positive. Ties in
confidence keep input order (samples in GT order, vectors in file order).

Precision and recall are accumulated over all samples in confidence order; AP is the area under the
precision envelope (VOC "area"). Class AP is the mean over the thresholds (0.5, 1.0, 1.5 m); ``mAP`` the
mean over classes with at least one GT vector, ``mAP_all_classes`` over all classes (a class without GT
scores 0, as MapTR prints it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lisa.map import spec
from lisa.map.errors import MapDataError
from lisa.map.evaluation.chamfer import NO_MATCH, pair_scores

GTVector = tuple[str, np.ndarray]  # (class name, points [N, 2] in metres)
PredVector = tuple[str, np.ndarray, float]  # (class name, points [N, 2], confidence)


def voc_area_ap(recalls: np.ndarray, precisions: np.ndarray) -> float:
    """Area under the monotone precision envelope of a precision/recall curve."""
    mrec = np.concatenate([[0.0], recalls, [1.0]])
    mpre = np.concatenate([[0.0], precisions, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def _pairs(pred_sample: np.ndarray, gt_sample: np.ndarray, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (prediction, GT) index pair that shares a sample (both arrays sorted by sample)."""
    gt_count = np.bincount(gt_sample, minlength=num_samples)
    gt_start = np.concatenate([[0], np.cumsum(gt_count)[:-1]])
    per_pred = gt_count[pred_sample]
    pi = np.repeat(np.arange(len(pred_sample)), per_pred)
    offsets = np.arange(len(pi)) - np.repeat(np.cumsum(per_pred) - per_pred, per_pred)
    gi = np.repeat(gt_start[pred_sample], per_pred) + offsets
    return pi, gi


def best_gt(pred_lines, pred_sample, gt_lines, gt_sample, num_samples,
            within: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each prediction's best pair score and the index of that GT (-1 where no pair matches)."""
    best = np.full(len(pred_lines), NO_MATCH)
    arg = np.full(len(pred_lines), -1, dtype=np.int64)
    pi, gi = _pairs(pred_sample, gt_sample, num_samples)
    if len(pi) == 0:
        return best, arg
    scores = pair_scores(pred_lines, gt_lines, pi, gi, within)
    order = np.lexsort((gi, -scores, pi))  # per prediction: best score first, then the lowest GT index
    first = np.concatenate([[True], pi[order][1:] != pi[order][:-1]])
    sel = order[first]
    matched = sel[scores[sel] > NO_MATCH]
    best[pi[matched]], arg[pi[matched]] = scores[matched], gi[matched]
    return best, arg


def class_ap(best: np.ndarray, arg: np.ndarray, confidence: np.ndarray, num_gt: int, threshold: float) -> float:
    """AP of one class at one threshold from each prediction's best score / GT."""
    if len(best) == 0:
        return 0.0
    order = np.argsort(-confidence, kind="stable")
    passing = order[best[order] >= -threshold]
    tp = np.zeros(len(best), dtype=bool)
    _, first = np.unique(arg[passing], return_index=True)
    tp[passing[first]] = True
    tp_c = np.cumsum(tp[order])
    fp_c = np.cumsum(~tp[order])
    eps = np.finfo(np.float32).eps
    return voc_area_ap(tp_c / max(num_gt, eps), tp_c / np.maximum(tp_c + fp_c, eps))


def evaluate(gts: Mapping[str, Sequence[GTVector]], predictions: Mapping[str, Sequence[PredVector]],
             thresholds: Sequence[float] = spec.THRESHOLDS, num_points: int = spec.EVAL_POINTS) -> dict:
    """Chamfer AP of ``predictions`` against ``gts`` (both keyed by sample token).

    Samples missing from ``predictions`` count as predicting nothing; a prediction for a sample that is not
    in ``gts`` is an error. Returns ``{"ap": {class: {"0.5": ..}}, "class_ap", "mAP", "mAP_all_classes",
    "num_gt", "num_pred", "num_samples"}``.
    """
    unknown = [t for t in predictions if t not in gts]
    if unknown:
        raise MapDataError(f"{len(unknown)} predicted sample(s) are not in the GT (first: {unknown[0]}); "
                           f"evaluate against the GT of the same split")
    tokens = list(gts)
    result: dict = {"ap": {}, "class_ap": {}, "num_gt": {}, "num_pred": {}, "num_samples": len(tokens)}
    for cls in spec.CLASSES:
        gt_lines, gt_sample, pr_lines, pr_sample, conf = [], [], [], [], []
        for s, token in enumerate(tokens):
            for name, pts in gts[token]:
                if name == cls:
                    gt_lines.append(np.asarray(pts, dtype=np.float64))
                    gt_sample.append(s)
            for name, pts, score in predictions.get(token, ()):
                if name == cls:
                    pr_lines.append(np.asarray(pts, dtype=np.float64))
                    pr_sample.append(s)
                    conf.append(float(score))
        gl, pl = spec.resample_lines(gt_lines, num_points), spec.resample_lines(pr_lines, num_points)
        best, arg = best_gt(pl, np.asarray(pr_sample, np.int64), gl, np.asarray(gt_sample, np.int64), len(tokens),
                            within=max(thresholds))
        aps = {f"{t:.1f}": class_ap(best, arg, np.asarray(conf), len(gt_lines), t) for t in thresholds}
        result["ap"][cls] = aps
        result["class_ap"][cls] = float(np.mean(list(aps.values())))
        result["num_gt"][cls], result["num_pred"][cls] = len(gt_lines), len(pr_lines)
    with_gt = [result["class_ap"][c] for c in spec.CLASSES if result["num_gt"][c] > 0]
    result["mAP"] = float(np.mean(with_gt)) if with_gt else 0.0
    result["mAP_all_classes"] = float(np.mean(list(result["class_ap"].values())))
    return result
