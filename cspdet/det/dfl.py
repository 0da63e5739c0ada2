"""Distance ("ltrb") box encoding and distribution focal loss -- the box side of a task-aligned head (its CIoU loss
is in :mod:`cspdet.det.iou_loss`).

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

from .._deprecated import moved

__all__ = ["dist2bbox", "bbox2dist", "dfl_expectation", "distribution_focal_loss"]


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


# ciou_loss and batched_box_ciou moved to iou_loss.py (named after their concept)
__getattr__ = moved(__name__, dict.fromkeys(("ciou_loss", "batched_box_ciou"), "cspdet.det.iou_loss"))
