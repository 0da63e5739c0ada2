"""SimOTA label assignment (YOLOX), vectorised over the whole batch.

For every image, every ground-truth box (GT) picks its ``k`` cheapest prediction points, where

* cost(gt, point) = BCE(sqrt(sigmoid(cls) * sigmoid(obj)), one-hot(gt class)) summed over classes
  + 3 * -log(IoU(predicted box, gt) + 1e-8) + 1e6 if the point's centre is outside the gt's centre prior;
* the centre prior of a gt is the square of half-side ``center_radius * stride`` around its centre, and only
  points inside the prior of at least one gt of the image are candidates at all;
* ``k`` (dynamic k) = int(sum of the gt's 10 largest IoUs over candidate points), at least 1;
* a point claimed by several gts keeps only the gt with the lowest cost.

Everything is a batched tensor operation over (B images, M padded gts, K candidate points): there is no
Python loop over images, gts or points. The batch is processed in chunks only to bound memory.
``benchmarks/bench_assigner.py`` times it, batched and image by image (numbers in
``benchmarks/results/measurements.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .boxes import batched_box_iou, pack_targets

__all__ = ["Assignment", "SimOTAAssigner"]

# F.binary_cross_entropy clamps log() at -100; the closed form below does the same so costs match YOLOX's.
_LOG_CLAMP = -100.0


@dataclass
class Assignment:
    """Result of label assignment for a batch.

    Attributes:
        fg_mask: (B, A) bool, True for points that are positives (foreground).
        matched_gt: (B, A) int64, index into the M axis of the targets for foreground points (0 elsewhere).
        matched_iou: (B, A) float, IoU between the point's predicted box and its gt (0 for background);
            the soft classification target.
        num_fg: (B,) int64, foreground points per image.
    """

    fg_mask: Tensor
    matched_gt: Tensor
    matched_iou: Tensor
    num_fg: Tensor


class SimOTAAssigner:
    """Batched SimOTA (YOLOX's simplified optimal-transport assignment).

    Args:
        center_radius: half-side of the centre prior, in strides (YOLOX: 1.5).
        topk_iou: number of top IoUs summed to get each gt's dynamic k (YOLOX: 10).
        iou_weight: weight of the -log IoU cost (YOLOX: 3.0).
        outside_cost: cost added for points outside the gt's centre prior (YOLOX: 1e6).
        max_pairs: upper bound on B_chunk * M * A elements per chunk, to bound memory on large batches.
    """

    def __init__(
        self,
        center_radius: float = 1.5,
        topk_iou: int = 10,
        iou_weight: float = 3.0,
        outside_cost: float = 1e6,
        max_pairs: int = 1 << 24,
    ) -> None:
        self.center_radius = center_radius
        self.topk_iou = topk_iou
        self.iou_weight = iou_weight
        self.outside_cost = outside_cost
        self.max_pairs = max_pairs

    @torch.no_grad()
    def __call__(
        self,
        cls_logits: Tensor,
        obj_logits: Tensor,
        pred_boxes: Tensor,
        point_centers: Tensor,
        point_strides: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        gt_mask: Tensor,
    ) -> Assignment:
        """Assign gts to prediction points.

        Args:
            cls_logits: (B, A, C) class logits.
            obj_logits: (B, A) objectness logits.
            pred_boxes: (B, A, 4) decoded predicted boxes, xyxy input px.
            point_centers: (A, 2) centre of each point's grid cell, input px.
            point_strides: (A,) stride of each point.
            gt_boxes: (B, M, 4) xyxy input px (padding rows arbitrary).
            gt_labels: (B, M) int64 class indices in [0, C).
            gt_mask: (B, M) bool, True for real gts.

        Returns:
            :class:`Assignment` with (B, A) tensors; ``matched_gt`` indexes the original M axis.
        """
        b, a, _ = cls_logits.shape
        device = cls_logits.device
        gt_mask = gt_mask.bool()
        n_valid = gt_mask.sum(1)
        m = int(n_valid.max()) if b > 0 and gt_boxes.shape[1] > 0 else 0
        if m == 0:  # no gt anywhere: everything is background
            return Assignment(
                fg_mask=torch.zeros(b, a, dtype=torch.bool, device=device),
                matched_gt=torch.zeros(b, a, dtype=torch.long, device=device),
                matched_iou=torch.zeros(b, a, dtype=torch.float32, device=device),
                num_fg=torch.zeros(b, dtype=torch.long, device=device),
            )
        # Move real gts to the front and drop all-padding columns: M shrinks to the most gts in one image.
        order, gt_boxes, gt_labels, gt_mask = pack_targets(gt_boxes, gt_labels, gt_mask, m)

        chunk = max(1, self.max_pairs // max(1, m * a))
        parts = [
            self._assign(
                cls_logits[i : i + chunk],
                obj_logits[i : i + chunk],
                pred_boxes[i : i + chunk],
                point_centers,
                point_strides,
                gt_boxes[i : i + chunk],
                gt_labels[i : i + chunk],
                gt_mask[i : i + chunk],
            )
            for i in range(0, b, chunk)
        ]
        fg_mask, matched, matched_iou = (torch.cat(t) for t in zip(*parts))
        matched_gt = order.gather(1, matched)  # back to indices into the caller's (padded) M axis
        return Assignment(
            fg_mask=fg_mask,
            matched_gt=torch.where(fg_mask, matched_gt, torch.zeros_like(matched_gt)),
            matched_iou=matched_iou,
            num_fg=fg_mask.sum(1),
        )

    def _assign(
        self,
        cls_logits: Tensor,
        obj_logits: Tensor,
        pred_boxes: Tensor,
        centers: Tensor,
        strides: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        gt_mask: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One chunk with gts already compacted: returns fg (B, A), matched gt (B, A), matched IoU (B, A)."""
        b, a, num_classes = cls_logits.shape
        m = gt_boxes.shape[1]

        # Centre prior: |point centre - gt centre| < r * stride on both axes.
        gt_centers = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2  # (B, M, 2)
        radius = (self.center_radius * strides)[None, None, :]  # (1, 1, A)
        in_prior = (centers[None, None, :, 0] - gt_centers[..., 0, None]).abs() < radius  # (B, M, A)
        in_prior &= (centers[None, None, :, 1] - gt_centers[..., 1, None]).abs() < radius
        in_prior &= gt_mask[..., None]
        candidate = in_prior.any(1)  # (B, A): inside the prior of any gt of the image

        # Only candidates can be matched, and they are a few percent of all points: gather them into a
        # (B, K) padded set first so the per-class work below touches K points, not A.
        k_max = max(1, int(candidate.sum(1).max()))
        cand_idx = torch.argsort((~candidate).to(torch.int8), dim=1, stable=True)[:, :k_max]  # (B, K)
        cand_ok = candidate.gather(1, cand_idx)  # (B, K); False = padding
        cls_k = cls_logits.gather(1, cand_idx[..., None].expand(-1, -1, num_classes)).float()
        obj_k = obj_logits.gather(1, cand_idx).float()
        boxes_k = pred_boxes.gather(1, cand_idx[..., None].expand(-1, -1, 4)).float()
        in_prior = in_prior.gather(2, cand_idx[:, None].expand(-1, m, -1))  # (B, M, K)

        ious = batched_box_iou(gt_boxes, boxes_k)  # (B, M, K)

        # Classification cost without a (B, M, K, C) tensor: with a one-hot target,
        # sum_c BCE(p_c, y_c) = sum_c -log(1 - p_c) + log(1 - p_g) - log(p_g) for the gt class g.
        p = (cls_k.sigmoid() * obj_k.sigmoid()[..., None]).sqrt()  # (B, K, C)
        log_p = p.log().clamp(min=_LOG_CLAMP)
        log_1mp = torch.log1p(-p).clamp(min=_LOG_CLAMP)
        idx = gt_labels.clamp(0, num_classes - 1)[:, None, :].expand(-1, k_max, -1)  # (B, K, M)
        cls_cost = -log_1mp.sum(-1)[:, None, :] + (log_1mp.gather(2, idx) - log_p.gather(2, idx)).transpose(1, 2)

        cost = cls_cost + self.iou_weight * -torch.log(ious + 1e-8) + self.outside_cost * (~in_prior).float()
        usable = cand_ok[:, None, :] & gt_mask[..., None]  # (B, M, K)
        cost = cost.masked_fill(~usable, float("inf"))

        # Dynamic k from the top IoUs among candidate points; padding gts get k = 0.
        n_top = min(self.topk_iou, k_max)
        top_ious = (ious * usable).topk(n_top, dim=2).values
        k = top_ious.sum(2).int().clamp(min=1) * gt_mask  # (B, M)

        # Each gt takes its k cheapest points (k <= n_top, so one topk serves all gts).
        top_cost, top_idx = cost.topk(n_top, dim=2, largest=False)
        take = (torch.arange(n_top, device=cost.device) < k[..., None]) & top_cost.isfinite()
        matching = torch.zeros(b, m, k_max, dtype=torch.bool, device=cost.device)
        matching.scatter_(2, top_idx, take)  # topk indices are distinct, so no write conflicts

        # Points claimed by several gts keep the cheapest gt (argmin over all gts, as in YOLOX).
        n_claims = matching.sum(1)  # (B, K)
        fg_k = n_claims > 0
        matched_k = torch.where(n_claims > 1, cost.argmin(1), matching.to(torch.uint8).argmax(1))
        iou_k = ious.gather(1, matched_k[:, None]).squeeze(1) * fg_k

        # Back from the candidate set to all A points (cand_idx rows are distinct, so scatter is exact).
        fg = torch.zeros(b, a, dtype=torch.bool, device=cost.device).scatter_(1, cand_idx, fg_k)
        matched = torch.zeros(b, a, dtype=torch.long, device=cost.device).scatter_(1, cand_idx, matched_k)
        matched_iou = torch.zeros(b, a, dtype=torch.float32, device=cost.device).scatter_(1, cand_idx, iou_k)
        return fg, matched, matched_iou
