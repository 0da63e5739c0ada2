"""From decoded predictions to final detections: score filter, pre-NMS top-k, class-aware NMS, max_det."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_convert, nms

__all__ = ["postprocess"]


def postprocess(
    preds: Tensor,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    pre_nms_topk: int | None = None,
    multi_label: bool = False,
) -> list[dict[str, Tensor]]:
    """Turn the eval-mode output of the detector into per-image detections.

    Single-label (default, YOLOX's convention): each point keeps its best class, scored ``obj * cls_prob``.
    Multi-label (YOLOv8's validator): every (point, class) pair scoring at least ``conf`` is a candidate, so a
    point can give boxes of several classes; more candidates reach NMS, which raises COCO recall at low ``conf``.

    Args:
        preds: (B, N, 5 + C) ``cx, cy, w, h`` (input px), objectness and class probabilities.
        conf: minimum score.
        iou: NMS IoU threshold.
        max_det: detections kept per image, highest scores first.
        classes: keep only these class indices (after picking each point's best class).
        agnostic: one NMS over all classes instead of one per class.
        pre_nms_topk: keep at most this many highest-scoring points per image before NMS. ``None`` (default)
            applies no cap, as YOLOX does: every point scoring at least ``conf`` enters NMS, so the detections
            (and mAP) equal YOLOX's. A cap is purely a speed knob for low ``conf`` (evaluation at 0.001 lets
            thousands of points through; at 640 px there are 8400 points, so any cap >= 8400 is a no-op) and
            can drop true detections in crowded images; ``benchmarks/bench_postprocess.py`` measures it.
        multi_label: every class above ``conf`` of a point is a candidate (see above).

    Returns:
        One dict per image: ``boxes`` (K, 4) xyxy float32 input px, ``scores`` (K,) float32,
        ``labels`` (K,) int64, sorted by decreasing score.
    """
    if preds.dim() != 3 or preds.shape[-1] < 6:
        raise ValueError(f"postprocess: preds must be (B, N, 5 + C) with C >= 1, got {tuple(preds.shape)}")
    if pre_nms_topk is not None and (isinstance(pre_nms_topk, bool) or not isinstance(pre_nms_topk, int)
                                     or pre_nms_topk < 1):
        raise ValueError(f"postprocess: pre_nms_topk must be None (no cap) or a positive integer, got {pre_nms_topk!r}")
    keep_classes = None if classes is None else torch.as_tensor(list(classes), device=preds.device)
    results = []
    for p in preds.float():  # NMS output sizes differ per image, so this loop is inherent
        if multi_label:
            all_scores = p[:, 4:5] * p[:, 5:]  # (N, C)
            point, labels = (all_scores >= conf).nonzero(as_tuple=True)
            scores = all_scores[point, labels]
            keep = torch.ones_like(scores, dtype=torch.bool)
        else:
            cls_prob, labels = p[:, 5:].max(1)
            scores = p[:, 4] * cls_prob
            keep = scores >= conf
            point = torch.arange(p.shape[0], device=p.device)
        if keep_classes is not None:
            keep &= torch.isin(labels, keep_classes)
        boxes, scores, labels = p[point[keep], :4], scores[keep], labels[keep]
        if pre_nms_topk is not None and scores.numel() > pre_nms_topk:
            top = scores.topk(pre_nms_topk).indices
            boxes, scores, labels = boxes[top], scores[top], labels[top]
        boxes = box_convert(boxes, "cxcywh", "xyxy")
        kept = nms(boxes, scores, iou) if agnostic else batched_nms(boxes, scores, labels, iou)
        kept = kept[:max_det]  # nms returns indices sorted by decreasing score
        results.append({"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept].long()})
    return results
