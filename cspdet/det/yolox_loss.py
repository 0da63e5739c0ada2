"""Detection losses of the anchor-free decoupled head (YOLOX's recipe).

Given SimOTA's assignment, with ``num_fg`` = foreground points in the batch (at least 1):

* IoU loss (weight 5): ``1 - IoU**2`` between matched predicted boxes and their gts (or GIoU loss);
* objectness: BCE-with-logits over **all** points, target 1 for foreground, 0 otherwise;
* classification: BCE-with-logits on foreground points, target one-hot(gt class) * IoU of the match;
* L1 (optional, the final no-augmentation epochs): raw regression outputs vs the encoded gt box;

each summed and divided by ``num_fg``. ``loss`` is their sum, with the IoU term already weighted.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou_loss

from .simota import SimOTAAssigner
from .boxes import elementwise_box_iou
from .targets import Targets, as_targets

__all__ = ["box_iou_loss", "encode_l1_targets", "SimOTALoss"]


def box_iou_loss(pred: Tensor, target: Tensor, loss_type: Literal["iou", "giou"] = "iou") -> Tensor:
    """Per-box regression loss.

    Args:
        pred, target: (N, 4) xyxy.
        loss_type: ``"iou"`` = 1 - IoU**2 (YOLOX default), ``"giou"`` = 1 - GIoU (torchvision).

    Returns:
        (N,) loss per box.
    """
    if loss_type == "iou":
        return 1.0 - elementwise_box_iou(pred, target) ** 2
    if loss_type == "giou":
        return generalized_box_iou_loss(pred, target, reduction="none")
    raise ValueError(f"box_iou_loss: loss_type must be 'iou' or 'giou', got {loss_type!r}")


def encode_l1_targets(gt_boxes: Tensor, points: Tensor, point_strides: Tensor, eps: float = 1e-8) -> Tensor:
    """Inverse of :func:`cspdet.det.boxes.decode_boxes`: the raw outputs that would reproduce ``gt_boxes``.

    Args:
        gt_boxes: (N, 4) xyxy px.
        points: (N, 2) grid cell indices; point_strides: (N,).

    Returns:
        (N, 4) (dx, dy, log w, log h) in grid units.
    """
    cxcywh = box_convert(gt_boxes, "xyxy", "cxcywh")
    s = point_strides[:, None]
    return torch.cat((cxcywh[:, :2] / s - points, torch.log(cxcywh[:, 2:] / s + eps)), 1)


class SimOTALoss:
    """SimOTA assignment + YOLOX losses for one batch.

    Args:
        num_classes: C.
        reg_weight: weight of the IoU loss (YOLOX: 5.0).
        iou_type: ``"iou"`` or ``"giou"``.
        assigner: the label assigner (default :class:`SimOTAAssigner` with YOLOX's settings).
    """

    def __init__(
        self,
        num_classes: int,
        reg_weight: float = 5.0,
        iou_type: Literal["iou", "giou"] = "iou",
        assigner: SimOTAAssigner | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.reg_weight = reg_weight
        self.iou_type = iou_type
        self.assigner = assigner or SimOTAAssigner()

    def __call__(
        self,
        cls_logits: Tensor,
        obj_logits: Tensor,
        reg: Tensor,
        pred_boxes: Tensor,
        points: Tensor,
        point_strides: Tensor,
        targets: Targets,
        target_mask: Tensor | None = None,
        use_l1: bool = False,
    ) -> dict[str, Tensor]:
        """Compute the losses.

        Args:
            cls_logits: (B, A, C); obj_logits: (B, A); reg: (B, A, 4) raw regression outputs.
            pred_boxes: (B, A, 4) decoded boxes, xyxy input px (differentiable w.r.t. ``reg``).
            points: (A, 2) grid cell indices; point_strides: (A,).
            targets: the batch's :class:`~cspdet.det.targets.Targets` (boxes xyxy input px; M may be 0).
            target_mask: deprecated: only with a packed (B, M, 5) ``targets`` tensor, its (B, M) mask.
            use_l1: add the L1 term.

        Returns:
            dict with scalar tensors ``loss`` (to backpropagate), and detached ``iou_loss`` (already
            x reg_weight), ``obj_loss``, ``cls_loss``, ``l1_loss`` and ``num_fg`` (foreground points in the
            batch, float) for logging.
        """
        targets = as_targets(targets, target_mask, caller="SimOTALoss")
        mask = targets.mask
        labels = targets.labels
        # One host sync for the range check (padded rows count as class 0).
        lo, hi = torch.stack(torch.aminmax(labels.masked_fill(~mask, 0))).tolist() if labels.numel() else (0, 0)
        if lo < 0 or hi >= self.num_classes:
            raise ValueError(f"target class ids must be in [0, {self.num_classes}), got {lo}..{hi}")
        gt_boxes = targets.boxes.float()
        centers = (points + 0.5) * point_strides[:, None]

        assign = self.assigner(
            cls_logits.detach(),
            obj_logits.detach(),
            pred_boxes.detach(),
            centers,
            point_strides,
            gt_boxes,
            labels,
            mask,
        )
        fg = assign.fg_mask  # (B, A)
        num_fg_t = fg.sum()
        num_fg = num_fg_t.clamp(min=1).float()  # exact count: bf16/fp16 would round it (e.g. 1001 -> 1000)

        # Matched gts of foreground points, in the same (row-major over B, A) order as pred[fg].
        batch_idx = torch.arange(fg.shape[0], device=fg.device)[:, None].expand_as(fg)[fg]
        gt_idx = assign.matched_gt[fg]
        fg_gt_boxes = gt_boxes[batch_idx, gt_idx]  # (F, 4)
        fg_labels = labels[batch_idx, gt_idx]  # (F,)

        iou_loss = box_iou_loss(pred_boxes[fg].float(), fg_gt_boxes, self.iou_type).sum() / num_fg

        obj_loss = F.binary_cross_entropy_with_logits(obj_logits.float(), fg.float(), reduction="sum") / num_fg

        cls_target = F.one_hot(fg_labels, self.num_classes).float() * assign.matched_iou[fg][:, None]
        cls_loss = F.binary_cross_entropy_with_logits(cls_logits[fg].float(), cls_target, reduction="sum") / num_fg

        if use_l1:
            pts = points[None].expand(fg.shape[0], -1, -1)[fg]
            strd = point_strides[None].expand_as(fg)[fg]
            l1_target = encode_l1_targets(fg_gt_boxes, pts, strd)
            l1_loss = F.l1_loss(reg[fg].float(), l1_target, reduction="sum") / num_fg
        else:
            l1_loss = reg.new_zeros((), dtype=torch.float32)

        iou_loss = self.reg_weight * iou_loss
        # Only the total keeps the graph: the parts are for logging, and a logger holding them must not keep
        # the whole batch's activations alive.
        return {
            "loss": iou_loss + obj_loss + cls_loss + l1_loss,
            "iou_loss": iou_loss.detach(),
            "obj_loss": obj_loss.detach(),
            "cls_loss": cls_loss.detach(),
            "l1_loss": l1_loss.detach(),
            "num_fg": num_fg_t.float(),
        }
