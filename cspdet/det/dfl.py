"""Distance ("ltrb") box encoding, distribution focal loss and CIoU -- the box side of a task-aligned head.

A prediction point at ``p = (x, y)`` (cell centre, in grid units of its level) predicts its distances to the
four sides of the box, ``(l, t, r, b)``, in strides: ``box = (x - l, y - t, x + r, y + b) * stride``.
With ``reg_max > 1`` each distance is a distribution over the integer bins ``0 .. reg_max - 1`` (GFL / YOLOv8)
and decodes to its expectation; the distribution focal loss (DFL) pushes probability onto the two bins that
bracket the target distance. With ``reg_max == 1`` the distance is regressed directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import complete_box_iou_loss

__all__ = ["dist2bbox", "bbox2dist", "dfl_expectation", "distribution_focal_loss", "ciou_loss", "batched_box_ciou"]


def dist2bbox(dist: Tensor, points: Tensor) -> Tensor:
    """Distances to the sides -> xyxy box, in the units of ``points``.

    Args:
        dist: (..., 4) ``l, t, r, b`` (>= 0 for a proper box).
        points: (..., 2) ``x, y`` (broadcast against ``dist``).

    Returns:
        (..., 4) ``x1, y1, x2, y2 = x - l, y - t, x + r, y + b``.
    """
    return torch.cat((points - dist[..., :2], points + dist[..., 2:]), -1)


def bbox2dist(points: Tensor, boxes: Tensor, reg_max: int | None = None, eps: float = 0.01) -> Tensor:
    """Inverse of :func:`dist2bbox`: distances from ``points`` to the sides of ``boxes`` (same units).

    Args:
        points: (..., 2) ``x, y``; boxes: (..., 4) xyxy.
        reg_max: when given, clamp to ``[0, reg_max - 1 - eps]`` so the DFL target always has a right-hand bin
            (``reg_max - 1`` is the largest representable distance). ``None``: no clamp (direct regression).

    Returns:
        (..., 4) ``l, t, r, b``.
    """
    dist = torch.cat((points - boxes[..., :2], boxes[..., 2:] - points), -1)
    return dist if reg_max is None else dist.clamp(0, reg_max - 1 - eps)


def dfl_expectation(logits: Tensor, project: Tensor) -> Tensor:
    """Decode distance distributions to their expected values.

    Args:
        logits: (..., 4 * reg_max) bin logits, side-major (``l`` bins first).
        project: (reg_max,) bin values (``0 .. reg_max - 1``).

    Returns:
        (..., 4) expected distances ``sum_i softmax(logits)_i * project_i`` per side.
    """
    reg_max = project.numel()
    prob = logits.unflatten(-1, (4, reg_max)).softmax(-1)
    return prob @ project.to(prob.dtype)


def distribution_focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Distribution focal loss (GFL, Li et al. 2020) per box.

    For a target distance t in [0, reg_max - 1) with neighbours ``l = floor(t)`` and ``r = l + 1``:
    ``DFL = (r - t) * CE(logits, l) + (t - l) * CE(logits, r)``, averaged over the four sides. It is 0-gradient
    exactly when the softmax puts mass ``r - t`` on ``l`` and ``t - l`` on ``r``, whose expectation is t.

    Args:
        logits: (N, 4 * reg_max) bin logits.
        target: (N, 4) distances, already clamped to ``[0, reg_max - 1 - eps]`` (:func:`bbox2dist`).

    Returns:
        (N,) loss per box.
    """
    n = target.shape[0]
    reg_max = logits.shape[-1] // 4
    logits = logits.reshape(n * 4, reg_max).float()
    t = target.reshape(-1).float()
    left = t.floor().long()
    w_left = left + 1 - t
    ce_left = F.cross_entropy(logits, left, reduction="none")
    ce_right = F.cross_entropy(logits, (left + 1).clamp(max=reg_max - 1), reduction="none")
    return (ce_left * w_left + ce_right * (1 - w_left)).reshape(n, 4).mean(-1)


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
