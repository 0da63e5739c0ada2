"""Losses of a task-aligned, anchor-free head without objectness (YOLOv8's recipe), for one head branch.

Given a :class:`~cspdet.det.tal.TaskAlignedAssigner` assignment with soft targets ``t`` (normalised alignment,
0 on background) and ``T = max(sum of t over the batch, 1)``:

* classification: BCE-with-logits over **all** points and classes, target ``t`` for the matched class and 0
  elsewhere (IoU-aware soft target; there is no objectness branch), summed / T;
* box: ``(1 - CIoU)`` of each positive's predicted box with its gt, weighted by ``t``, summed / T;
* distribution: distribution focal loss of the side distances (``reg_max > 1``), or the L1 distance error in
  strides (``reg_max == 1``, direct regression), weighted by ``t``, summed / T;

``loss = box_weight * box + cls_weight * cls + dfl_weight * dfl`` (YOLOv8 gains 7.5 / 0.5 / 1.5). The loss is a
per-batch mean (normalised by T), like :class:`cspdet.det.SimOTALoss`; YOLOv8 additionally multiplies by the
batch size, which only rescales the learning rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .dfl import bbox2dist, dist2bbox, distribution_focal_loss
from .iou_loss import ciou_loss
from .tal import TaskAlignedAssigner
from .targets import Targets, as_targets

__all__ = ["TaskAlignedLoss", "o2m_weight_schedule"]


def o2m_weight_schedule(progress: float, start: float = 0.8, end: float = 0.1) -> float:
    """Weight of the one-to-many branch at training ``progress`` in [0, 1] (clamped): linear from ``start`` to
    ``end`` (YOLO26's "ProgLoss": 0.8 -> 0.1; the one-to-one branch gets ``1 - weight``). The task-aligned head
    sets ``o2m_weight = o2m_weight_schedule(epoch / max(epochs - 1, 1))`` in its ``set_epoch``, once per epoch."""
    p = min(max(float(progress), 0.0), 1.0)
    return start + (end - start) * p


class TaskAlignedLoss:
    """Task-aligned assignment + CIoU / DFL / BCE losses of one head branch.

    Args:
        num_classes: C.
        reg_max: distance bins per side (``1`` = direct regression, L1 in the "dfl" slot).
        assigner: label assigner (default :class:`TaskAlignedAssigner` with YOLOv8's topk 10, alpha 0.5,
            beta 6).
        box_weight, cls_weight, dfl_weight: gains of the three terms (YOLOv8: 7.5, 0.5, 1.5).
    """

    def __init__(self, num_classes: int, reg_max: int = 16, assigner: TaskAlignedAssigner | None = None,
                 box_weight: float = 7.5, cls_weight: float = 0.5, dfl_weight: float = 1.5) -> None:
        if reg_max < 1:
            raise ValueError(f"TaskAlignedLoss: reg_max must be >= 1, got {reg_max}")
        self.num_classes, self.reg_max = num_classes, reg_max
        self.assigner = assigner or TaskAlignedAssigner()
        self.box_weight, self.cls_weight, self.dfl_weight = box_weight, cls_weight, dfl_weight

    def __call__(
        self,
        box_out: Tensor,
        pred_dist: Tensor,
        cls_logits: Tensor,
        anchor_points: Tensor,
        point_strides: Tensor,
        targets: Targets,
        target_mask: Tensor | None = None,
        assign_from: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Compute the losses.

        Args:
            box_out: (B, A, 4 * reg_max) raw box outputs (bin logits, side-major; or raw distances if reg_max 1).
            pred_dist: (B, A, 4) decoded ``l, t, r, b`` distances in strides (differentiable w.r.t. ``box_out``).
            cls_logits: (B, A, C) class logits.
            anchor_points: (A, 2) point centres in grid units (cell index + 0.5); point_strides: (A,).
            targets: the batch's :class:`~cspdet.det.targets.Targets` (boxes xyxy input px; M may be 0).
            target_mask: deprecated: only with a packed (B, M, 5) ``targets`` tensor, its (B, M) mask.
            assign_from: optional ``(cls_logits (B, A, C), pred_dist (B, A, 4))`` of another branch that choose the
                positives and their soft targets instead of this branch's own predictions (used detached).

        Returns:
            dict of scalar tensors: ``loss`` (to backpropagate) and detached, already weighted ``box_loss``,
            ``cls_loss``, ``dfl_loss``, and ``num_fg`` (positives in the batch, float) for logging.
        """
        targets = as_targets(targets, target_mask, caller="TaskAlignedLoss")
        mask = targets.mask
        labels = targets.labels
        if labels.numel():  # one host sync for the range check (padding rows count as class 0)
            lo, hi = torch.stack(torch.aminmax(labels.masked_fill(~mask, 0))).tolist()
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(f"target class ids must be in [0, {self.num_classes}), got {lo}..{hi}")
        gt_boxes = targets.boxes.float()
        stride = point_strides[:, None].float()  # (A, 1)
        # The clamp only guards CIoU's w / h ratios against a (never seen) exactly zero-size predicted box.
        pred_boxes = dist2bbox(pred_dist.float().clamp(min=1e-6), anchor_points) * stride  # (B, A, 4) px

        if assign_from is None:
            assign_cls, assign_boxes = cls_logits, pred_boxes
        else:
            assign_cls = assign_from[0]
            assign_boxes = dist2bbox(assign_from[1].float().clamp(min=1e-6), anchor_points) * stride
        assign = self.assigner(assign_cls.detach(), assign_boxes.detach(), anchor_points * stride, gt_boxes, labels,
                               mask, scores_are_logits=True)
        fg = assign.fg_mask
        score = assign.target_scores  # (B, A), 0 on background
        score_sum = score.sum().clamp(min=1.0)

        # BCE-with-logits against a target that is 0 except at each positive's class:
        # sum BCE(x, t) = sum softplus(x) - sum x * t, and x * t is non-zero only at those B * A * C entries it
        # names -- exact, about twice as fast as the library BCE on CPU and with no dense (B, A, C) target.
        logits = cls_logits.float()
        fg_logit = logits[fg].gather(1, assign.target_labels[fg][:, None]).squeeze(1)
        cls_loss = (F.softplus(logits).sum() - (fg_logit * score[fg]).sum()) / score_sum

        weight = score[fg]
        box_loss = (ciou_loss(pred_boxes[fg], assign.target_boxes[fg]) * weight).sum() / score_sum
        # Distance targets in strides of each positive's own level.
        points_fg = anchor_points[None].expand(fg.shape[0], -1, -1)[fg]
        stride_fg = point_strides[None].expand_as(fg)[fg][:, None].float()
        target_dist = bbox2dist(points_fg, assign.target_boxes[fg] / stride_fg,
                                self.reg_max if self.reg_max > 1 else None)
        if self.reg_max > 1:
            dfl = distribution_focal_loss(box_out[fg], target_dist)
        else:
            dfl = F.l1_loss(pred_dist[fg].float(), target_dist, reduction="none").mean(-1)
        dfl_loss = (dfl * weight).sum() / score_sum

        box_loss = self.box_weight * box_loss
        cls_loss = self.cls_weight * cls_loss
        dfl_loss = self.dfl_weight * dfl_loss
        # Only the total keeps the graph: the parts are for logging.
        return {
            "loss": box_loss + cls_loss + dfl_loss,
            "box_loss": box_loss.detach(),
            "cls_loss": cls_loss.detach(),
            "dfl_loss": dfl_loss.detach(),
            "num_fg": fg.sum().float(),
        }
