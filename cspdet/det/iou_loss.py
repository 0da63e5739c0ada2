"""Complete-IoU (CIoU, Zheng et al. 2020) of box pairs and of batched box sets: the box loss of the task-aligned head
(:mod:`cspdet.det.tal_loss`) and the overlap its assigner ranks points by (:mod:`cspdet.det.tal`).

YOLOX's own IoU / GIoU box loss is :func:`cspdet.det.yolox_loss.box_iou_loss`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import complete_box_iou_loss

__all__ = ["ciou_loss", "batched_box_ciou"]


def ciou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - CIoU`` per box pair (matching rows), via :func:`torchvision.ops.complete_box_iou_loss`.

    Args:
        pred, target: (N, 4) xyxy.

    Returns:
        (N,) loss (0 for identical boxes; CIoU = IoU - centre-distance term - aspect-ratio term).
    """
    return complete_box_iou_loss(pred.float(), target.float(), reduction="none", eps=1e-7)


def batched_box_ciou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise complete IoU for a batch of box sets (torchvision's ``complete_box_iou`` takes one pair of sets).

    CIoU = IoU - rho^2 / c^2 - alpha * v, with rho the centre distance, c the diagonal of the smallest enclosing
    box, ``v = 4 / pi^2 (atan(w2 / h2) - atan(w1 / h1))^2`` and ``alpha = v / (1 - IoU + v)`` (Zheng et al. 2020),
    the quantity :func:`ciou_loss` optimises.

    Args:
        boxes1: (B, M, 4) xyxy; boxes2: (B, N, 4) xyxy.

    Returns:
        (B, M, N) CIoU in [-1, 1].
    """
    b1, b2 = boxes1[:, :, None, :], boxes2[:, None, :, :]
    wh1 = (boxes1[..., 2:] - boxes1[..., :2]).clamp(min=0)
    wh2 = (boxes2[..., 2:] - boxes2[..., :2]).clamp(min=0)
    inter = (torch.minimum(b1[..., 2:], b2[..., 2:]) - torch.maximum(b1[..., :2], b2[..., :2])).clamp(min=0).prod(-1)
    union = wh1.prod(-1)[:, :, None] + wh2.prod(-1)[:, None, :] - inter + eps
    iou = inter / union
    enclose = torch.maximum(b1[..., 2:], b2[..., 2:]) - torch.minimum(b1[..., :2], b2[..., :2])
    c2 = enclose.pow(2).sum(-1) + eps
    rho2 = ((b1[..., :2] + b1[..., 2:]) - (b2[..., :2] + b2[..., 2:])).pow(2).sum(-1) / 4
    atan1 = torch.atan(wh1[..., 0] / (wh1[..., 1] + eps))  # (B, M)
    atan2 = torch.atan(wh2[..., 0] / (wh2[..., 1] + eps))  # (B, N)
    v = (4 / torch.pi**2) * (atan2[:, None, :] - atan1[:, :, None]).pow(2)
    alpha = v / (v - iou + (1 + eps))
    return iou - rho2 / c2 - alpha * v
