"""Box utilities shared by the assigner, the losses and the post-processing.

Boxes inside cspdet are ``xyxy`` in absolute pixels (float32). The head predicts ``cx, cy, w, h`` (YOLOX's
layout) and converts once, in :func:`decode_boxes` / :func:`torchvision.ops.box_convert`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["batched_box_iou", "cxcywh_to_xyxy", "elementwise_box_iou", "grid_points", "decode_boxes", "pack_targets",
           "xyxy_to_cxcywh"]


def batched_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-9) -> Tensor:
    """Pairwise IoU for a batch of box sets (``torchvision.ops.box_iou`` takes one set pair only).

    Args:
        boxes1: (B, M, 4) xyxy.
        boxes2: (B, N, 4) xyxy.

    Returns:
        (B, M, N) IoU in [0, 1]. Degenerate boxes (zero area) give 0, never NaN.
    """
    lt = torch.maximum(boxes1[:, :, None, :2], boxes2[:, None, :, :2])
    rb = torch.minimum(boxes1[:, :, None, 2:], boxes2[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area1 = (boxes1[..., 2:] - boxes1[..., :2]).clamp(min=0).prod(-1)
    area2 = (boxes2[..., 2:] - boxes2[..., :2]).clamp(min=0).prod(-1)
    union = area1[:, :, None] + area2[:, None, :] - inter
    return inter / (union + eps)


def elementwise_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-16) -> Tensor:
    """IoU of matching rows: boxes1[i] vs boxes2[i].

    Args:
        boxes1, boxes2: (N, 4) xyxy.

    Returns:
        (N,) IoU. ``eps`` matches YOLOX's ``IOUloss`` so the loss values are comparable.
    """
    lt = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    rb = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(-1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(-1)
    return inter / (area1 + area2 - inter + eps)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) ``cx, cy, w, h`` -> ``x1, y1, x2, y2``: the float operations of ``torchvision.ops.box_convert`` (so
    results are bit-identical to it) on two halves instead of four columns, which exports as a handful of graph
    nodes instead of a split / squeeze / stack chain."""
    half = 0.5 * boxes[..., 2:]
    return torch.cat((boxes[..., :2] - half, boxes[..., :2] + half), -1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) ``x1, y1, x2, y2`` -> ``cx, cy, w, h`` (``box_convert``'s operations, see :func:`cxcywh_to_xyxy`)."""
    return torch.cat(((boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]), -1)


def grid_points(
    sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Grid cell coordinates of every prediction point of every level, in prediction order.

    Points are ordered level by level, row-major within a level (the order of ``flatten(2)`` on a (B, C, H, W)
    map), which is the order the head concatenates its outputs in.

    Args:
        sizes: (H, W) of each level's feature map.
        strides: input pixels per grid cell for each level.

    Returns:
        points: (A, 2) float, the (x, y) integer cell index of each point (its top-left corner is
            ``points * stride``; its centre ``(points + 0.5) * stride``).
        point_strides: (A,) float, the stride of each point.
    """
    if len(sizes) != len(strides):
        raise ValueError(f"grid_points: got {len(sizes)} feature sizes but {len(strides)} strides")
    points, point_strides = [], []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(
            torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
        )
        points.append(torch.stack((xs, ys), -1).reshape(-1, 2))
        point_strides.append(torch.full((h * w,), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(point_strides)


def decode_boxes(reg: Tensor, points: Tensor, point_strides: Tensor) -> Tensor:
    """Anchor-free decoding: centre = (offset + cell) * stride, size = exp(log-size) * stride.

    Args:
        reg: (..., A, 4) raw regression outputs (dx, dy, log w, log h) in grid units.
        points: (A, 2) cell indices from :func:`grid_points`.
        point_strides: (A,) strides.

    Returns:
        (..., A, 4) ``cx, cy, w, h`` in input pixels.
    """
    s = point_strides[:, None]
    xy = (reg[..., :2] + points) * s
    wh = reg[..., 2:].exp() * s
    return torch.cat((xy, wh), -1)


def pack_targets(gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Move each image's real targets to the front of the padded M axis and keep the first ``m`` columns (``m`` =
    the most real targets in one image), so assigners work on (B, m) instead of the loader's padded (B, M).

    Args:
        gt_boxes: (B, M, 4) xyxy; gt_labels: (B, M); gt_mask: (B, M) bool, True for real targets.

    Returns:
        ``order`` (B, m) int64 -- packed column -> the caller's column (``order.gather(1, j)`` maps back), and the
        packed (B, m, 4) float32 boxes, (B, m) int64 labels, (B, m) bool mask.
    """
    order = torch.argsort((~gt_mask).to(torch.int8), dim=1, stable=True)[:, :m]
    return (order, gt_boxes.gather(1, order[..., None].expand(-1, -1, 4)).float(), gt_labels.long().gather(1, order),
            gt_mask.gather(1, order))
