"""The numbers behind the evaluation plots: detections matched to ground truth, per image and class.

COCOeval gives precision over *recall* (the PR curve, :mod:`cspdet.engine.coco_metrics`); what it does not give
is how precision, recall and F1 change with the *confidence threshold* a user deploys with, nor which classes
are confused with which. Both come from the scored detections matched to the ground truth here:

- :func:`match_detections`: every detection TP or FP at IoU 0.5 (greedy by score within a class, the COCOeval
  rule), crowd regions ignored, all images pooled;
- :func:`confidence_curves`: precision, recall, F1 of the detections scoring >= t, per class, over t in [0, 1];
- :func:`confusion_matrix`: at conf 0.25 / IoU 0.45, detections matched to ground truth regardless of class
  (greedy by IoU, one to one), with a background row (missed objects) and column (false detections).

numpy only (no torch, no matplotlib), like :mod:`cspdet.engine.coco_metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ConfidenceCurves",
    "ImageBoxes",
    "box_iou",
    "confidence_curves",
    "confusion_matrix",
    "images_from_coco",
    "match_detections",
]

# Confidence thresholds of the P / R / F1 curves.
CONF_GRID = np.linspace(0.0, 1.0, 1001)


@dataclass
class ImageBoxes:
    """Ground truth and detections of one image, xyxy px, labels contiguous 0..K-1.

    Attributes:
        gt_boxes: (G, 4) float64; gt_labels: (G,) int64 -- the objects to find.
        crowd_boxes: (Q, 4) float64; crowd_labels: (Q,) int64 -- COCO ``iscrowd`` regions: a detection inside
            one that matches no object is neither right nor wrong (COCOeval ignores it too).
        det_boxes: (D, 4) float64; det_labels: (D,) int64; det_scores: (D,) float64, sorted by descending score.
    """

    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    crowd_boxes: np.ndarray
    crowd_labels: np.ndarray
    det_boxes: np.ndarray
    det_labels: np.ndarray
    det_scores: np.ndarray


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), both xyxy; returns (N, M) float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    inter = _intersection(a, b)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    wh = (np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2])).clip(0)
    return wh[..., 0] * wh[..., 1]


def _in_crowd(image: ImageBoxes, candidates: np.ndarray, same_class: bool) -> np.ndarray:
    """(D,) bool: detection lies >= half inside a crowd region (of its own class when ``same_class``).

    COCO's crowd IoU is intersection over the detection's own area, so a small detection inside a large crowd
    box counts as covered.
    """
    covered = np.zeros(len(image.det_boxes), bool)
    if not len(image.crowd_boxes) or not candidates.any():
        return covered
    d = image.det_boxes
    area = ((d[:, 2] - d[:, 0]).clip(0) * (d[:, 3] - d[:, 1]).clip(0))[:, None]
    ioa = np.where(area > 0, _intersection(d, image.crowd_boxes) / np.where(area > 0, area, 1.0), 0.0)
    if same_class:
        ioa = ioa * (image.det_labels[:, None] == image.crowd_labels[None, :])
    return candidates & (ioa >= 0.5).any(axis=1)


def images_from_coco(coco_gt: Any, detections: Sequence[dict[str, Any]],
                     category_ids: Sequence[int]) -> list[ImageBoxes]:
    """Group COCO ground truth and results by image.

    Args:
        coco_gt: a pycocotools ``COCO``.
        detections: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`` (ids known to ``coco_gt``).
        category_ids: contiguous label -> category id (``COCOMetrics.category_ids``).

    Returns:
        one :class:`ImageBoxes` per ground-truth image, in ``coco_gt.getImgIds()`` order.
    """
    label_of = {int(c): k for k, c in enumerate(category_ids)}
    dets_by_image: dict[int, list[dict[str, Any]]] = {}
    for d in detections:
        dets_by_image.setdefault(int(d["image_id"]), []).append(d)
    images = []
    for image_id in coco_gt.getImgIds():
        anns = [a for a in coco_gt.imgToAnns.get(image_id, []) if int(a["category_id"]) in label_of]
        crowd = [bool(a.get("iscrowd", 0)) for a in anns]
        gt_boxes, gt_labels = _xywh_to_xyxy([a["bbox"] for a in anns]), np.array(
            [label_of[int(a["category_id"])] for a in anns], np.int64)
        crowd = np.asarray(crowd, bool)
        dets = sorted(dets_by_image.get(int(image_id), []), key=lambda d: -float(d["score"]))
        images.append(ImageBoxes(
            gt_boxes=gt_boxes[~crowd], gt_labels=gt_labels[~crowd],
            crowd_boxes=gt_boxes[crowd], crowd_labels=gt_labels[crowd],
            det_boxes=_xywh_to_xyxy([d["bbox"] for d in dets]),
            det_labels=np.array([label_of[int(d["category_id"])] for d in dets], np.int64),
            det_scores=np.array([float(d["score"]) for d in dets], np.float64),
        ))
    return images


def _xywh_to_xyxy(boxes: list[list[float]]) -> np.ndarray:
    out = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    out[:, 2:] += out[:, :2]
    return out


# ------------------------------------------------------------------------------ P / R / F1 over confidence


def _greedy_by_score(iou: np.ndarray, threshold: float) -> np.ndarray:
    """(D,) bool: which of the score-sorted detections (rows of ``iou``, (D, G)) match an object.

    The COCOeval rule: detections in descending score take the still-free object they overlap most (IoU >=
    ``threshold``). Written as one step per *match* rather than per detection -- the highest-scoring detection
    that still has a free candidate takes its best one -- which gives the same pairs in at most G steps, where
    a loop over detections takes D (hundreds at conf 0.001).
    """
    matched = np.zeros(iou.shape[0], bool)
    candidate = iou >= threshold
    while True:
        rows = candidate.any(axis=1)
        if not rows.any():
            return matched
        i = int(np.argmax(rows))  # first row = highest score with a candidate left
        j = int(np.argmax(np.where(candidate[i], iou[i], -1.0)))
        matched[i] = True
        candidate[i, :] = False
        candidate[:, j] = False


def match_detections(images: Sequence[ImageBoxes], num_classes: int,
                     iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every detection of every image marked true or false positive at ``iou_threshold``.

    A detection matches an object of its own class (greedy by score, see :func:`_greedy_by_score`); an unmatched
    detection inside a crowd region of its class is dropped, as COCOeval drops it.

    Returns:
        scores (N,) float64, labels (N,) int64, tp (N,) bool -- the kept detections of all images --
        and n_gt (K,) int64, the number of (non-crowd) objects per class.
    """
    scores, labels, tps = [], [], []
    n_gt = np.zeros(num_classes, np.int64)
    for image in images:
        np.add.at(n_gt, image.gt_labels, 1)
        if not len(image.det_boxes):
            continue
        # one class-masked IoU matrix for all classes: pairs of different classes can never match
        iou = box_iou(image.det_boxes, image.gt_boxes) * (image.det_labels[:, None] == image.gt_labels[None, :])
        tp = _greedy_by_score(iou, iou_threshold)
        keep = ~_in_crowd(image, ~tp, same_class=True)
        scores.append(image.det_scores[keep])
        labels.append(image.det_labels[keep])
        tps.append(tp[keep])
    if not scores:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, bool), n_gt
    return np.concatenate(scores), np.concatenate(labels), np.concatenate(tps), n_gt


@dataclass
class ConfidenceCurves:
    """Precision, recall and F1 of the detections scoring >= each confidence threshold.

    Attributes:
        conf: (T,) thresholds, ascending from 0 to 1.
        precision, recall, f1: (K, T) per class.
        n_gt: (K,) objects per class; classes without any are left out of the means.
    """

    conf: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    n_gt: np.ndarray

    @property
    def present(self) -> np.ndarray:
        """(K,) bool: classes with ground truth (the ones the curves say something about)."""
        return self.n_gt > 0

    def mean(self, which: str) -> np.ndarray:
        """(T,) mean over the classes with ground truth of ``"precision"``, ``"recall"`` or ``"f1"`` (zeros
        when no class has any)."""
        values = getattr(self, which)[self.present]
        return values.mean(axis=0) if len(values) else np.zeros_like(self.conf)

    def best(self) -> tuple[int, float]:
        """(index into ``conf``, threshold) of the highest mean F1; the highest such threshold on a tie, since
        it keeps fewer detections for the same F1."""
        f1 = self.mean("f1")
        index = len(f1) - 1 - int(np.argmax(f1[::-1]))
        return index, float(self.conf[index])


def confidence_curves(scores: np.ndarray, labels: np.ndarray, tp: np.ndarray, n_gt: np.ndarray,
                      conf: np.ndarray = CONF_GRID) -> ConfidenceCurves:
    """P, R and F1 per class as functions of the confidence threshold.

    Args:
        scores (N,), labels (N,), tp (N,) bool, n_gt (K,): :func:`match_detections`.
        conf: (T,) ascending thresholds.

    At threshold t a class keeps its n(t) detections scoring >= t, tp(t) of them true: P = tp / n,
    R = tp / n_gt, F1 = 2PR / (P + R). Above a class's highest score (n = 0) P stays at the precision of
    its top-scoring detection rather than jumping to an arbitrary 0 or 1; a class without detections has P = R = 0.
    """
    conf = np.asarray(conf, np.float64)
    k_classes = len(n_gt)
    precision = np.zeros((k_classes, len(conf)))
    recall = np.zeros((k_classes, len(conf)))
    for k in range(k_classes):
        sel = labels == k
        if not sel.any():
            continue
        order = np.argsort(-scores[sel], kind="stable")
        s, hit = scores[sel][order], tp[sel][order]
        cum_tp = np.cumsum(hit)
        # n(t): detections scoring >= t; searchsorted on the ascending negated scores counts them, ties included
        n = np.searchsorted(-s, -conf, side="right")
        at = np.maximum(n, 1) - 1  # n = 0 reads the top detection's precision (and recall 0 below)
        precision[k] = cum_tp[at] / (at + 1)
        recall[k] = np.where(n > 0, cum_tp[at], 0) / max(int(n_gt[k]), 1)
    denom = precision + recall
    f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1.0), 0.0)
    return ConfidenceCurves(conf, precision, recall, f1, np.asarray(n_gt, np.int64))


# --------------------------------------------------------------------------------------- confusion matrix


def confusion_matrix(images: Sequence[ImageBoxes], num_classes: int, conf: float = 0.25,
                     iou_threshold: float = 0.45) -> np.ndarray:
    """Counts of (predicted class, true class) over all images.

    Detections scoring >= ``conf`` are matched to objects of *any* class, one to one, highest IoU first
    (IoU >= ``iou_threshold``); a pair counts at [predicted, true], so a misclassified object lands off the
    diagonal. An object no detection matched counts at [K, true] (missed, background row); a detection that
    matched nothing at [predicted, K] (false detection, background column), unless it lies in a crowd region.

    Returns:
        (K + 1, K + 1) int64, rows predicted class, columns true class, index K = background.
    """
    k = num_classes
    matrix = np.zeros((k + 1, k + 1), np.int64)
    for image in images:
        keep = image.det_scores >= conf
        det_labels = image.det_labels[keep]
        det_used = np.zeros(len(det_labels), bool)
        gt_used = np.zeros(len(image.gt_labels), bool)
        if len(det_labels) and len(image.gt_labels):
            iou = box_iou(image.det_boxes[keep], image.gt_boxes)
            di, gi = np.nonzero(iou >= iou_threshold)
            for n in np.argsort(-iou[di, gi], kind="stable"):  # a handful of pairs per image at conf 0.25
                d, g = di[n], gi[n]
                if not det_used[d] and not gt_used[g]:
                    det_used[d] = gt_used[g] = True
                    matrix[det_labels[d], image.gt_labels[g]] += 1
        np.add.at(matrix[k], image.gt_labels[~gt_used], 1)
        false = ~det_used
        if len(image.crowd_boxes):
            in_crowd = np.zeros(len(image.det_boxes), bool)
            in_crowd[keep] = false
            false &= ~_in_crowd(image, in_crowd, same_class=False)[keep]
        np.add.at(matrix[:, k], det_labels[false], 1)
    return matrix
