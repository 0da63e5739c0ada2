"""From decoded predictions to final detections -- the one place post-processing lives.

:func:`postprocess` reads a :class:`~cspdet.det.predictions.Predictions` record of any head: score filter,
pre-NMS top-k, class-aware NMS, max_det (or, for a one-to-one head, the NMS-free top-k of
:func:`cspdet.det.nms_free.topk_postprocess`). :func:`nms_dets` is the traceable variant that export graphs with
``--nms`` end in, and :func:`filter_dets` reads such a graph's rows back. The detector's ``predict``, the deployed backends, the evaluator and the predictor all call these.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms, nms

from .nms_free import topk_postprocess
from .predictions import Predictions, from_deploy_layout

__all__ = ["as_predictions", "filter_dets", "nms_dets", "postprocess"]


def as_predictions(preds: Predictions | Tensor) -> Predictions:
    """``preds`` as a record: a record as is, a (B, N, 5 + C) tensor in the deploy layout (an exported file's
    output, or what ``Detector`` returned in eval mode) through :func:`~cspdet.det.predictions.from_deploy_layout`."""
    if isinstance(preds, Predictions):
        return preds
    if isinstance(preds, Tensor):
        return from_deploy_layout(preds)
    raise TypeError(f"expected a Predictions record or a (B, N, 5 + C) tensor, got {type(preds).__name__}")


def postprocess(
    preds: Predictions | Tensor,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    pre_nms_topk: int | None = None,
    multi_label: bool = False,
    nms_free: bool = False,
) -> list[dict[str, Tensor]]:
    """Turn decoded predictions into per-image detections.

    Single-label (default, YOLOX's convention): each box keeps its best class, scored ``obj * cls_prob``
    (``cls_prob`` for heads without objectness). Multi-label (YOLOv8's validator): every (box, class) pair scoring
    at least ``conf`` is a candidate, so a box can give detections of several classes; more candidates reach NMS,
    which raises COCO recall at low ``conf``.

    Args:
        preds: a :class:`Predictions` record (or a (B, N, 5 + C) deploy-layout tensor, read as one).
        conf: minimum score.
        iou: NMS IoU threshold.
        max_det: detections kept per image, highest scores first.
        classes: keep only these class indices (after picking each box's best class).
        agnostic: one NMS over all classes instead of one per class.
        pre_nms_topk: keep at most this many highest-scoring boxes per image before NMS. ``None`` (default)
            applies no cap, as YOLOX does: every box scoring at least ``conf`` enters NMS, so the detections
            (and mAP) equal YOLOX's. A cap is purely a speed knob for low ``conf`` (evaluation at 0.001 lets
            thousands of points through; at 640 px there are 8400 points, so any cap >= 8400 is a no-op) and
            can drop true detections in crowded images; ``benchmarks/bench_postprocess.py`` measures it.
        multi_label: every class above ``conf`` of a box is a candidate (see above).
        nms_free: predictions of a one-to-one head: the top-k (box, class) pairs, no NMS
            (:func:`~cspdet.det.nms_free.topk_postprocess`; ``iou``, ``agnostic``, ``pre_nms_topk`` and
            ``multi_label`` do not apply).

    Returns:
        One dict per image: ``boxes`` (K, 4) xyxy float32 input px, ``scores`` (K,) float32,
        ``labels`` (K,) int64, sorted by decreasing score.
    """
    preds = as_predictions(preds).float()
    if nms_free:
        return topk_postprocess(preds, conf, max_det, classes)
    if pre_nms_topk is not None and (isinstance(pre_nms_topk, bool) or not isinstance(pre_nms_topk, int)
                                     or pre_nms_topk < 1):
        raise ValueError(f"postprocess: pre_nms_topk must be None (no cap) or a positive integer, got {pre_nms_topk!r}")
    keep_classes = None if classes is None else torch.as_tensor(list(classes), device=preds.boxes.device)
    multi_label = multi_label and preds.class_scores is not None  # one label per box: already single-label
    if multi_label:
        all_scores = preds.score_matrix()  # (B, N, C)
    else:
        best_scores, best_labels = preds.best_class()  # (B, N)
    results = []
    for i in range(preds.batch_size):  # NMS output sizes differ per image, so this loop is inherent
        if multi_label:
            point, labels = (all_scores[i] >= conf).nonzero(as_tuple=True)
            scores = all_scores[i][point, labels]
            keep = torch.ones_like(scores, dtype=torch.bool)
        else:
            scores, labels = best_scores[i], best_labels[i]
            keep = scores >= conf
            point = torch.arange(scores.shape[0], device=scores.device)
        if keep_classes is not None:
            keep &= torch.isin(labels, keep_classes)
        boxes, scores, labels = preds.boxes[i][point[keep]], scores[keep], labels[keep]
        if pre_nms_topk is not None and scores.numel() > pre_nms_topk:
            top = scores.topk(pre_nms_topk).indices
            boxes, scores, labels = boxes[top], scores[top], labels[top]
        kept = nms(boxes, scores, iou) if agnostic else batched_nms(boxes, scores, labels, iou)
        kept = kept[:max_det]  # nms returns indices sorted by decreasing score
        results.append({"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept].long()})
    return results


def nms_dets(preds: Predictions, conf: float, iou: float, max_det: int) -> Tensor:
    """Traceable single-label class-aware NMS for export graphs: (B, max_det, 6) ``x1, y1, x2, y2, score, label``
    rows sorted by decreasing score, zero-padded (score 0).

    The same detections as :func:`postprocess` with ``multi_label=False`` up to NMS's tie order; the class-aware
    NMS is written in its coordinate-offset form, which traces to one NonMaxSuppression. The batch loop unrolls, so
    such a graph has a fixed batch size.
    """
    best_scores, best_labels = preds.best_class()
    out = []
    for boxes_i, scores_i, labels_i in zip(preds.boxes, best_scores, best_labels):
        keep = (scores_i >= conf).nonzero().flatten()
        boxes, scores, labels = boxes_i[keep], scores_i[keep], labels_i[keep].to(boxes_i.dtype)
        # one offset per class larger than any box coordinate (from all boxes: never an empty max)
        offset = labels[:, None] * (boxes_i.abs().max() * 2 + 1)
        kept = nms(boxes + offset, scores, iou)[:max_det]
        dets = torch.cat((boxes[kept], scores[kept, None], labels[kept, None]), -1)
        out.append(F.pad(dets, (0, 0, 0, max_det - dets.shape[0])))
    return torch.stack(out)


def filter_dets(dets: Tensor, conf: float, max_det: int, classes: Sequence[int] | None = None) -> list[dict[str, Tensor]]:
    """(B, K, 6) zero-padded rows of :func:`nms_dets` / :func:`~cspdet.det.nms_free.topk_dets` (an ``--nms``
    export's output) -> per-image dicts as :func:`postprocess` returns them: rows with score >= ``conf`` (padding
    rows have score 0) of the wanted ``classes``, at most ``max_det``."""
    out = []
    for d in dets.float():
        keep = d[:, 4] >= max(conf, 1e-12)
        if classes is not None:
            keep &= torch.isin(d[:, 5].long(), torch.as_tensor(list(classes), device=d.device))
        d = d[keep][:max_det]
        out.append({"boxes": d[:, :4], "scores": d[:, 4], "labels": d[:, 5].long()})
    return out
