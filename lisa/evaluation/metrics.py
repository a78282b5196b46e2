"""gIoU / cIoU exactly as the original LISA ``validate()`` computes them.

Per mask pair (prediction = logits > 0, ground truth 0/1 with 255 = ignore), two classes
(0 background, 1 foreground): pixels ignored in the ground truth are ignored in the prediction
too; ``I[c]`` = pixels where both are c, ``U[c] = A_pred[c] + A_gt[c] - I[c]``. Per mask,
``iou = I / (U + 1e-5)``, plus 1 where ``U == 0`` (empty target and empty prediction count as a
perfect match). Over the data set:

- cIoU = ``sum(I[1]) / (sum(U[1]) + 1e-10)`` (cumulative foreground IoU),
- gIoU = ``sum over masks of iou[1] / (number of masks + 1e-5)`` (the original's averaging meter).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

IGNORE = 255


def intersection_union(pred: torch.Tensor, gt: torch.Tensor, ignore_index: int = IGNORE):
    """``pred``: {0,1} [H,W]; ``gt``: {0,1,255} [H,W] -> (I[2], U[2]) as float64 tensors."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction of shape {tuple(pred.shape)} for a ground truth of shape {tuple(gt.shape)}")
    pred = pred.long().flatten().clone()
    gt = gt.long().flatten()
    keep = gt != ignore_index
    pred, gt = pred[keep], gt[keep]
    inter = pred[pred == gt]
    i = torch.bincount(inter[(inter >= 0) & (inter <= 1)], minlength=2)[:2].double()
    a_p = torch.bincount(pred[(pred >= 0) & (pred <= 1)], minlength=2)[:2].double()
    a_t = torch.bincount(gt[(gt >= 0) & (gt <= 1)], minlength=2)[:2].double()
    return i, a_p + a_t - i


def mask_iou(i: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    iou = i / (u + 1e-5)
    return iou + (u == 0).double()


@dataclass
class SampleResult:
    index: int
    image_path: str
    queries: list[str]
    intersection: list[int] = field(default_factory=list)  # foreground, per mask
    union: list[int] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)
    intersection_bg: list[int] = field(default_factory=list)
    union_bg: list[int] = field(default_factory=list)
    seg_counts: list[int] = field(default_factory=list)  # [SEG] tokens produced (generate protocol)
    answers: list[str] = field(default_factory=list)

    def add(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        i, u = intersection_union(pred, gt)
        iou = mask_iou(i, u)
        self.intersection.append(int(i[1]))
        self.union.append(int(u[1]))
        self.iou.append(float(iou[1]))
        self.intersection_bg.append(int(i[0]))
        self.union_bg.append(int(u[0]))

    def to_dict(self) -> dict:
        d = {"index": self.index, "image_path": self.image_path, "queries": self.queries,
             "intersection": self.intersection, "union": self.union, "iou": self.iou}
        if self.seg_counts:
            d["seg_counts"] = self.seg_counts
        if self.answers:
            d["answers"] = self.answers
        return d


def summarize(samples: list[SampleResult]) -> dict:
    """Data-set metrics from all (already gathered) per-sample results."""
    n_masks = sum(len(s.iou) for s in samples)
    sum_i = sum(sum(s.intersection) for s in samples)
    sum_u = sum(sum(s.union) for s in samples)
    out = {
        "giou": float(sum(sum(s.iou) for s in samples) / (n_masks + 1e-5)),
        "ciou": float(sum_i / (sum_u + 1e-10)),
        "num_images": len(samples),
        "num_masks": n_masks,
        "intersection": int(sum_i),
        "union": int(sum_u),
    }
    if any(s.seg_counts for s in samples):
        counts = [c for s in samples for c in s.seg_counts]
        out["seg_rate"] = float(sum(1 for c in counts if c > 0) / max(len(counts), 1))
        out["multi_seg_rate"] = float(sum(1 for c in counts if c > 1) / max(len(counts), 1))
    return out
