"""NMS-free post-processing for a one-to-one head: the top-k (box, class) scores, no suppression.

A head trained with one-to-one matching gives each object one high-scoring box, so duplicates need no NMS:
the detections are simply the ``max_det`` best (box, class) pairs above ``conf`` (YOLOv10 / YOLO26 inference).
A box may appear with more than one class (two labels for one ambiguous object), as in those models.
:func:`topk_dets` is the traceable core, shared by :func:`topk_postprocess` and the export graphs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .predictions import Predictions, from_deploy_layout

__all__ = ["topk_dets", "topk_postprocess"]


def topk_dets(preds: Predictions, max_det: int, classes: Sequence[int] | None = None, pad: bool = True) -> Tensor:
    """The ``max_det`` best (box, class) pairs per image, no threshold: (B, max_det, 6) ``x1, y1, x2, y2, score,
    label`` rows sorted by decreasing score, zero-padded to ``max_det`` rows when there are fewer pairs (unless
    ``pad`` is False). Traceable.

    Two-stage top-k, exact up to ties: a pair in the global top-k has a score at most its box's best class
    score, so its box is among the ``max_det`` boxes of highest best-class score; the second top-k then runs
    over (max_det x C) pairs instead of (N x C).
    """
    if preds.class_scores is None:  # one label per box: the pairs are the boxes
        scores, labels = preds.scores, preds.labels
        keep = torch.ones_like(scores, dtype=torch.bool)
        if classes is not None:
            keep = torch.isin(labels, torch.as_tensor(list(classes), device=labels.device))
        top, idx = (scores * keep).topk(min(max_det, scores.shape[1]), dim=1)
        boxes = preds.boxes.gather(1, idx[..., None].expand(-1, -1, 4))
        dets = torch.cat((boxes, top[..., None], labels.gather(1, idx)[..., None].to(boxes.dtype)), -1)
    else:
        scores = preds.score_matrix()  # (B, N, C)
        n, num_classes = scores.shape[1], scores.shape[2]
        if classes is not None:
            keep = torch.zeros(num_classes, dtype=torch.bool, device=scores.device)
            keep[torch.as_tensor(list(classes), dtype=torch.long, device=scores.device)] = True
            scores = scores * keep
        k1 = min(max_det, n)
        point_idx = scores.amax(-1).topk(k1, dim=1).indices  # (B, k1)
        pair = scores.gather(1, point_idx[..., None].expand(-1, -1, num_classes)).flatten(1)  # (B, k1 * C)
        top, pair_idx = pair.topk(min(max_det, k1 * num_classes), dim=1)  # sorted, decreasing
        points = point_idx.gather(1, pair_idx // num_classes)
        labels = (pair_idx % num_classes).to(top.dtype)
        boxes = preds.boxes.gather(1, points[..., None].expand(-1, -1, 4))
        dets = torch.cat((boxes, top[..., None], labels[..., None]), -1)
    missing = max_det - dets.shape[1]
    return F.pad(dets, (0, 0, 0, missing)) if pad and missing > 0 else dets


def topk_postprocess(
    preds: Predictions | Tensor,
    conf: float = 0.25,
    max_det: int = 300,
    classes: Sequence[int] | None = None,
) -> list[dict[str, Tensor]]:
    """Top-k detections per image over all (box, class) pairs, without NMS (see :func:`topk_dets`).

    Args:
        preds: a :class:`~cspdet.det.predictions.Predictions` record (or a (B, N, 5 + C) deploy-layout tensor).
        conf: minimum score.
        max_det: detections kept per image.
        classes: keep only these class indices.

    Returns:
        One dict per image: ``boxes`` (K, 4) xyxy float32 input px, ``scores`` (K,) float32, ``labels`` (K,)
        int64, K <= max_det, sorted by decreasing score.
    """
    if isinstance(preds, Tensor):
        preds = from_deploy_layout(preds)
    if isinstance(max_det, bool) or not isinstance(max_det, int) or max_det < 1:
        raise ValueError(f"topk_postprocess: max_det must be a positive integer, got {max_det!r}")
    dets = topk_dets(preds.float(), max_det, classes, pad=False)
    results = []
    for d in dets:  # only the per-image count after the threshold differs
        ok = d[:, 4] >= conf
        results.append({"boxes": d[ok, :4], "scores": d[ok, 4], "labels": d[ok, 5].long()})
    return results
