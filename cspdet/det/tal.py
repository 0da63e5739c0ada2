"""Task-aligned label assignment (TOOD, Feng et al. 2021; YOLOv8's settings), vectorised over the whole batch.

For every image and every ground-truth box (gt):

* **candidates**: prediction points whose centre lies strictly inside the gt box. Optionally (YOLO26's "STAL")
  a gt side shorter than ``small_box[0]`` px is widened to ``small_box[1]`` px, about its centre, *for this test
  only*, so that tiny boxes falling between the centres of the finest grid still get candidates;
* **alignment** of a candidate: ``t = s^alpha * u^beta``, s = predicted probability of the gt's class,
  u = overlap of the predicted box with the gt (CIoU clamped at 0 by default, plain IoU on request);
* the gt claims its ``topk`` candidates of highest alignment;
* a point claimed by several gts keeps the claimant it overlaps most (highest u; TOOD's rule -- among the gts
  that claimed the point, where YOLOv8's code takes the highest u over every gt containing it);
* optionally (``topk2``, one-to-one matching) each gt then keeps only its ``topk2`` best points of those it won;
* soft class target of a positive: ``t / max_t(gt) * max_u(gt)`` -- the alignment normalised per gt so the
  gt's best point gets the gt's best overlap (an IoU-aware target: the classifier learns to score box quality).

Everything is a batched tensor operation over (B images, M padded gts, A points); no Python loop over images,
gts or points; only the candidate test and the per-gt top-k are dense over (B, M, A), scores and overlaps are
computed for the candidate pairs only. The batch is processed in chunks only to bound memory.
``benchmarks/bench_assigner.py`` times it beside SimOTA (same order of cost; numbers in
``benchmarks/results/measurements.md``).

Small boxes (``small_box``): without the widening, boxes with a side under 8 px often get no candidate point and
end with no positive; with 8 -> 16 px widening none lacks a candidate (``benchmarks/measure_tal_small_boxes.py`` on
coco128; counts in ``benchmarks/results/measurements.md``). Default on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .boxes import elementwise_box_iou, pack_targets
from .iou_loss import ciou_loss

__all__ = ["TALAssignment", "TaskAlignedAssigner"]


@dataclass
class TALAssignment:
    """Result of task-aligned assignment for a batch (every tensor is 0 / False on background points).

    Attributes:
        fg_mask: (B, A) bool, positives.
        matched_gt: (B, A) int64, index of the point's gt into the caller's (padded) M axis.
        target_labels: (B, A) int64 class of the matched gt.
        target_boxes: (B, A, 4) xyxy input px of the matched gt.
        target_scores: (B, A) float in [0, 1], the normalised alignment (soft class target, loss weight).
        num_fg: (B,) int64 positives per image.
    """

    fg_mask: Tensor
    matched_gt: Tensor
    target_labels: Tensor
    target_boxes: Tensor
    target_scores: Tensor
    num_fg: Tensor


class TaskAlignedAssigner:
    """Batched task-aligned assigner.

    Args:
        topk: candidates each gt claims (YOLOv8: 10; TOOD / PP-YOLOE: 13; YOLO26's one-to-one head: 7).
        alpha: exponent of the class score in the alignment (YOLOv8: 0.5; TOOD: 1.0).
        beta: exponent of the overlap (6.0 in TOOD, YOLOv8, PP-YOLOE).
        topk2: if set, after conflict resolution each gt keeps only its ``topk2`` best points (``1`` = one-to-one
            matching for an NMS-free head, as YOLO26's one-to-one branch).
        iou_type: overlap used in the alignment and the soft target: ``"ciou"`` (YOLOv8; the quantity the box
            loss optimises) or ``"iou"`` (TOOD).
        small_box: ``(min_side, new_side)`` px: for the candidate test only, a gt side shorter than ``min_side``
            is widened to ``new_side`` about the box centre (YOLO26: 8 -> 16, the two finest strides). A box
            narrower than the finest stride can lie between two rows/columns of point centres and then has no
            candidate at all, i.e. never becomes a positive. ``None`` disables it.
        eps: margin of the strict "centre inside the box" test.
        max_pairs: upper bound on B_chunk * M * A elements per chunk, to bound memory on large batches.
    """

    def __init__(
        self,
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
        topk2: int | None = None,
        iou_type: Literal["ciou", "iou"] = "ciou",
        small_box: tuple[float, float] | None = (8.0, 16.0),
        eps: float = 1e-9,
        max_pairs: int = 1 << 22,
    ) -> None:
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"TaskAlignedAssigner: topk must be a positive integer, got {topk!r}")
        if topk2 is not None and (isinstance(topk2, bool) or not isinstance(topk2, int) or topk2 < 1):
            raise ValueError(f"TaskAlignedAssigner: topk2 must be None or a positive integer, got {topk2!r}")
        if iou_type not in ("ciou", "iou"):
            raise ValueError(f"TaskAlignedAssigner: iou_type must be 'ciou' or 'iou', got {iou_type!r}")
        if small_box is not None and (len(small_box) != 2 or not 0 <= small_box[0] <= small_box[1]):
            raise ValueError(f"TaskAlignedAssigner: small_box must be None or (min_side, new_side) with "
                             f"0 <= min_side <= new_side, got {small_box!r}")
        self.topk, self.alpha, self.beta, self.topk2 = topk, alpha, beta, topk2
        self.iou_type = iou_type
        self.small_box = None if small_box is None else (float(small_box[0]), float(small_box[1]))
        self.eps = eps
        self.max_pairs = max_pairs

    def __repr__(self) -> str:
        return (f"TaskAlignedAssigner(topk={self.topk}, alpha={self.alpha}, beta={self.beta}, topk2={self.topk2}, "
                f"iou_type={self.iou_type!r}, small_box={self.small_box})")

    @torch.no_grad()
    def __call__(
        self,
        pred_scores: Tensor,
        pred_boxes: Tensor,
        points: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        gt_mask: Tensor,
        scores_are_logits: bool = False,
    ) -> TALAssignment:
        """Assign gts to prediction points.

        Args:
            pred_scores: (B, A, C) predicted class probabilities (after the sigmoid), or logits if
                ``scores_are_logits`` (the sigmoid is then applied to the candidate pairs only).
            pred_boxes: (B, A, 4) decoded predicted boxes, xyxy input px.
            points: (A, 2) centre of each point, input px.
            gt_boxes: (B, M, 4) xyxy input px (padding rows arbitrary).
            gt_labels: (B, M) int64 class indices in [0, C).
            gt_mask: (B, M) bool, True for real gts.

        Returns:
            :class:`TALAssignment`; ``matched_gt`` indexes the caller's M axis.
        """
        b, a, _ = pred_scores.shape
        device = pred_scores.device
        gt_mask = gt_mask.bool()
        m = int(gt_mask.sum(1).max()) if b > 0 and gt_boxes.shape[1] > 0 else 0
        if m == 0:  # no gt anywhere: everything is background
            return TALAssignment(
                fg_mask=torch.zeros(b, a, dtype=torch.bool, device=device),
                matched_gt=torch.zeros(b, a, dtype=torch.long, device=device),
                target_labels=torch.zeros(b, a, dtype=torch.long, device=device),
                target_boxes=torch.zeros(b, a, 4, dtype=torch.float32, device=device),
                target_scores=torch.zeros(b, a, dtype=torch.float32, device=device),
                num_fg=torch.zeros(b, dtype=torch.long, device=device),
            )
        # Move real gts to the front and drop all-padding columns: M shrinks to the most gts in one image.
        order, gt_boxes, gt_labels, gt_mask = pack_targets(gt_boxes, gt_labels, gt_mask, m)

        chunk = max(1, self.max_pairs // max(1, m * a))
        parts = [
            self._assign(pred_scores[i : i + chunk], pred_boxes[i : i + chunk], points.float(),
                         gt_boxes[i : i + chunk], gt_labels[i : i + chunk], gt_mask[i : i + chunk], scores_are_logits)
            for i in range(0, b, chunk)
        ]
        fg, matched, scores = (torch.cat(t) for t in zip(*parts))
        target_boxes = gt_boxes.gather(1, matched[..., None].expand(-1, -1, 4)) * fg[..., None]
        target_labels = gt_labels.gather(1, matched) * fg
        matched_gt = order.gather(1, matched) * fg  # back to indices into the caller's (padded) M axis
        return TALAssignment(fg, matched_gt, target_labels, target_boxes, scores, fg.sum(1))

    def _candidates(self, points: Tensor, gt_boxes: Tensor, gt_mask: Tensor) -> Tensor:
        """(B, M, A) bool: point centre strictly inside the gt box (small sides widened first, see ``small_box``)."""
        if self.small_box is not None:
            min_side, new_side = self.small_box
            ctr = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
            wh = gt_boxes[..., 2:] - gt_boxes[..., :2]
            half = torch.where(wh < min_side, torch.full_like(wh, new_side), wh) / 2
            gt_boxes = torch.cat((ctr - half, ctr + half), -1)
        px, py = points[:, 0], points[:, 1]
        x1, y1, x2, y2 = (gt_boxes[..., i, None] for i in range(4))  # (B, M, 1) each
        inside = (px - x1 > self.eps) & (x2 - px > self.eps) & (py - y1 > self.eps) & (y2 - py > self.eps)
        return inside & gt_mask[..., None]

    def _assign(self, pred_scores: Tensor, pred_boxes: Tensor, points: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                gt_mask: Tensor, scores_are_logits: bool) -> tuple[Tensor, Tensor, Tensor]:
        """One chunk with gts compacted: fg (B, A) bool, matched gt (B, A) into the compacted M, score (B, A).

        Only the candidate test and the top-k ranking are dense over (B, M, A); scores and overlaps are computed
        for the P candidate (gt, point) pairs only, and conflicts are resolved on the <= B * M * topk claims.
        """
        b, a, num_classes = pred_scores.shape
        m = gt_boxes.shape[1]
        device = pred_scores.device
        bi, mi, ai = self._candidates(points, gt_boxes, gt_mask).nonzero(as_tuple=True)  # P candidate pairs

        # Alignment t = s^alpha * u^beta of every candidate pair.
        labels = gt_labels.clamp(0, num_classes - 1)
        score = pred_scores[bi, ai, labels[bi, mi]].float()
        if scores_are_logits:
            score = score.sigmoid()
        pair_gt, pair_pred = gt_boxes[bi, mi], pred_boxes[bi, ai].float()
        if self.iou_type == "ciou":
            overlap = (1.0 - ciou_loss(pair_pred, pair_gt)).clamp_(min=0)
        else:
            overlap = elementwise_box_iou(pair_pred, pair_gt)
        align = score.pow(self.alpha) * overlap.pow(self.beta)

        # Each gt claims its top-k candidates. Ranking on -1 off the candidates makes a gt with fewer than k
        # candidates (or all-zero alignments) claim all of them and nothing else.
        rank = torch.full((b, m, a), -1.0, device=device)
        rank[bi, mi, ai] = align
        dense_overlap = torch.zeros(b, m, a, device=device)
        dense_overlap[bi, mi, ai] = overlap
        top_align, top_idx = rank.topk(min(self.topk, a), dim=2)  # (B, M, k)
        claimed = top_align >= 0
        top_overlap = dense_overlap.gather(2, top_idx)

        # A point claimed by several gts goes to the claimant it overlaps most (ties: lowest gt index).
        point = torch.arange(b, device=device)[:, None, None] * a + top_idx  # (B, M, k) index into B * A
        gt_idx = torch.arange(m, device=device)[None, :, None].expand_as(top_idx)
        key, ov, g = point[claimed], top_overlap[claimed], gt_idx[claimed]
        best = torch.full((b * a,), -1.0, device=device).scatter_reduce(0, key, ov, "amax")
        win = ov == best[key]
        first = torch.full((b * a,), m, device=device).scatter_reduce(0, key[win], g[win], "amin")
        win &= g == first[key]
        won = torch.zeros_like(claimed)
        won[claimed] = win

        if self.topk2 is not None:  # one-to-one pruning: each gt keeps its topk2 best wins
            keep_idx = torch.where(won, top_align, -1.0).topk(min(self.topk2, won.shape[2]), dim=2).indices
            won &= torch.zeros_like(won).scatter_(2, keep_idx, True)

        # Soft target: alignment normalised per gt so that its best positive scores its best overlap. No "+ eps" in
        # the division: with beta = 6 early alignments are often ~1e-9, where an eps would shrink the targets.
        align_won = top_align.clamp(min=0) * won
        max_align = align_won.amax(2, keepdim=True)
        max_overlap = (top_overlap * won).amax(2, keepdim=True)
        target = torch.where(max_align > 0, align_won / max_align.clamp(min=torch.finfo(max_align.dtype).tiny), 0.0)
        target = target * max_overlap

        key = point[won]  # winners are unique per point, so these writes never collide
        fg = torch.zeros(b * a, dtype=torch.bool, device=device)
        fg[key] = True
        matched = torch.zeros(b * a, dtype=torch.long, device=device)
        matched[key] = gt_idx[won]
        scores = torch.zeros(b * a, device=device)
        scores[key] = target[won]
        return fg.view(b, a), matched.view(b, a), scores.view(b, a)
