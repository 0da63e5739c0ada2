"""NMS-free post-processing for a one-to-one head: the top-k (point, class) scores, no suppression.

A head trained with one-to-one matching gives each object one high-scoring point, so duplicates need no NMS:
the detections are simply the ``max_det`` best (point, class) pairs above ``conf`` (YOLOv10 / YOLO26 inference).
A point may appear with more than one class (two labels for one ambiguous object), as in those models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_convert

__all__ = ["topk_postprocess"]


def topk_postprocess(
    preds: Tensor,
    conf: float = 0.25,
    max_det: int = 300,
    classes: Sequence[int] | None = None,
) -> list[dict[str, Tensor]]:
    """Top-k detections per image over all (point, class) pairs, without NMS.

    Two-stage top-k, exact up to ties: a pair in the global top-k has a score at most its point's best class
    score, so its point is among the ``max_det`` points of highest best-class score; the second top-k then runs
    over (max_det x C) pairs instead of (N x C).

    Args:
        preds: (B, N, 5 + C) ``cx, cy, w, h`` (input px), objectness (1 for heads without it) and class
            probabilities -- the layout of :func:`cspdet.det.postprocess`.
        conf: minimum score ``obj * cls_prob``.
        max_det: detections kept per image.
        classes: keep only these class indices.

    Returns:
        One dict per image: ``boxes`` (K, 4) xyxy float32 input px, ``scores`` (K,) float32, ``labels`` (K,)
        int64, K <= max_det, sorted by decreasing score.
    """
    if preds.dim() != 3 or preds.shape[-1] < 6:
        raise ValueError(f"topk_postprocess: preds must be (B, N, 5 + C) with C >= 1, got {tuple(preds.shape)}")
    if isinstance(max_det, bool) or not isinstance(max_det, int) or max_det < 1:
        raise ValueError(f"topk_postprocess: max_det must be a positive integer, got {max_det!r}")
    preds = preds.float()
    b, n, _ = preds.shape
    num_classes = preds.shape[-1] - 5
    scores = preds[..., 5:] * preds[..., 4:5]  # (B, N, C)
    if classes is not None:
        keep = torch.zeros(num_classes, dtype=torch.bool, device=preds.device)
        keep[torch.as_tensor(list(classes), dtype=torch.long, device=preds.device)] = True
        scores = scores * keep
    k1 = min(max_det, n)
    point_idx = scores.amax(-1).topk(k1, dim=1).indices  # (B, k1)
    pair_scores = scores.gather(1, point_idx[..., None].expand(-1, -1, num_classes)).flatten(1)  # (B, k1 * C)
    top_scores, pair_idx = pair_scores.topk(min(max_det, pair_scores.shape[1]), dim=1)  # sorted, decreasing
    points = point_idx.gather(1, pair_idx // num_classes)
    labels = pair_idx % num_classes
    boxes = box_convert(preds[..., :4].gather(1, points[..., None].expand(-1, -1, 4)), "cxcywh", "xyxy")
    results = []
    for i in range(b):  # only the per-image count after the threshold differs
        ok = top_scores[i] >= conf
        results.append({"boxes": boxes[i][ok], "scores": top_scores[i][ok], "labels": labels[i][ok].long()})
    return results
