"""Set losses of the map detector, and the 4-logit classification choice they rest on.

Classification: the head has 3 class logits + 1 no-object logit under one softmax (the shape users'
code expects, ``pred_logits [B, 50, 4]``), not MapTR's 3 independent sigmoids. The focal loss is the
softmax form, ``-(1 - p_t)^gamma * log p_t`` on the probability of the query's target (its matched
GT's class, or no-object for the unmatched queries), with no-object weighted ``noobj_weight`` since
most of the 50 queries are unmatched. Decoding follows the same model (see ``decode.py``): a query's
score is its largest class probability, so probability taken by no-object lowers every score, and a
query gives one instance, not one per class.

Points: ``loss_pts`` is the L1 distance between the predicted and the matched GT order's normalised
points (|dx| + |dy| averaged over the P points); ``loss_dir`` is 1 - cosine between successive-point
direction vectors in metres (the range is 30 m x 60 m, so directions in normalised units would be
skewed). Both are summed over matched instances; all three are divided by the number of GT instances
in the global batch (summed over processes), so data-parallel training equals one process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..spec import RANGE
from .matching import HungarianMatcher, Match
from .targets import MapTargets

LOSS_KEYS = ("loss_total", "loss_cls", "loss_pts", "loss_dir")


@dataclass
class LossWeights:
    cls: float = 2.0
    pts: float = 5.0
    dir: float = 0.005
    noobj_weight: float = 0.1  # class weight of the no-object target in loss_cls
    focal_alpha: float = 0.25  # matching cost only (the softmax loss weighs classes with noobj_weight)
    focal_gamma: float = 2.0
    aux: bool = True  # supervise every decoder layer, not only the last

    def to_dict(self) -> dict:
        return asdict(self)


def softmax_focal(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, gamma: float) -> torch.Tensor:
    """Sum over queries of ``weight[t] * (1 - p_t)^gamma * -log p_t``; ``logits [M, C + 1]``, ``target [M]``."""
    logp = logits.float().log_softmax(-1).gather(-1, target[:, None])[:, 0]
    return (weight[target] * (1 - logp.exp()).pow(gamma) * -logp).sum()


def direction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over instances of the mean ``1 - cos`` between successive-point directions, in metres.
    ``pred`` / ``target``: ``[M, P, 2]`` normalised. Target segments of zero length are skipped."""
    scale = pred.new_tensor([RANGE[2] - RANGE[0], RANGE[3] - RANGE[1]])
    dp = (pred[:, 1:] - pred[:, :-1]) * scale
    dt = (target[:, 1:] - target[:, :-1]) * scale
    valid = (dt.norm(dim=-1) > 1e-6).float()
    cos = F.cosine_similarity(dp, dt, dim=-1, eps=1e-8)
    per_instance = ((1 - cos) * valid).sum(-1) / valid.sum(-1).clamp(min=1)
    return per_instance.sum()


def global_count(n: int, device) -> float:
    """GT instances over all processes / number of processes (each process' loss share), at least 1."""
    t = torch.tensor(float(n), device=device)
    world = 1
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        dist.all_reduce(t)
    return max(t.item(), 1.0) / world


class SetCriterion:
    def __init__(self, num_classes: int, weights: LossWeights | None = None):
        self.num_classes = num_classes
        self.weights = weights or LossWeights()
        w = self.weights
        self.matcher = HungarianMatcher(w.cls, w.pts, w.focal_alpha, w.focal_gamma)

    def layer_losses(self, out: dict, targets: list[MapTargets], norm: float) -> dict[str, torch.Tensor]:
        logits, points = out["pred_logits"], out["pred_points"]
        matches: list[Match] = self.matcher(logits.detach(), points.detach(), targets)
        b, q, _ = logits.shape
        cls_target = torch.full((b, q), self.num_classes, dtype=torch.long, device=logits.device)
        pred_pts, tgt_pts = [], []
        for i, (m, t) in enumerate(zip(matches, targets)):
            cls_target[i, m.queries] = t.labels[m.gts]
            pred_pts.append(points[i, m.queries])
            tgt_pts.append(t.orders[m.gts, m.orders])
        class_weight = torch.ones(self.num_classes + 1, device=logits.device)
        class_weight[-1] = self.weights.noobj_weight
        loss_cls = softmax_focal(logits.flatten(0, 1), cls_target.flatten(), class_weight,
                                 self.weights.focal_gamma) / norm
        pred_pts = torch.cat(pred_pts).float()
        tgt_pts = torch.cat(tgt_pts).to(pred_pts.dtype)
        if len(pred_pts):
            loss_pts = (pred_pts - tgt_pts).abs().sum(-1).mean(-1).sum() / norm
            loss_dir = direction_loss(pred_pts, tgt_pts) / norm
        else:  # keep the graph connected so every process runs the same backward
            loss_pts = loss_dir = points.sum() * 0.0
        return {"loss_cls": loss_cls, "loss_pts": loss_pts, "loss_dir": loss_dir}

    def __call__(self, outputs: list[dict], targets: list[MapTargets]) -> dict[str, torch.Tensor]:
        """``outputs``: per decoder layer, last one last. Returns the last layer's three losses and
        ``loss_total``, the weighted sum over the supervised layers."""
        w = self.weights
        device = outputs[-1]["pred_logits"].device
        targets = [t.to(device) for t in targets]
        norm = global_count(sum(len(t) for t in targets), device)
        layers = outputs if w.aux else outputs[-1:]
        total = 0.0
        last = {}
        for out in layers:
            last = self.layer_losses(out, targets, norm)
            total = total + w.cls * last["loss_cls"] + w.pts * last["loss_pts"] + w.dir * last["loss_dir"]
        return {"loss_total": total, **last}
