"""The typed prediction record every head decodes to, and the deploy layout exported files keep.

:class:`Predictions` is the interchange between a head's ``decode``, post-processing (:func:`cspdet.det.postprocess`,
:func:`cspdet.det.topk_postprocess`), the evaluator, the predictor and the export graphs. It holds what a head
really predicts -- boxes and per-class scores, and an objectness factor only for a head that has one (YOLOX) --
instead of one packed tensor with a column of ones standing in for the objectness a head does not have.

Exported files (ONNX, OpenVINO, TorchScript) keep the layout they have always had, so files users already exported
keep working: (B, N, 5 + C) ``cx, cy, w, h`` (input px), objectness (1 for heads without one), class
probabilities. :func:`to_deploy_layout` writes a record in that layout (the export graph's last step) and
:func:`from_deploy_layout` reads a deployed file's output back into a record (the runtime's first step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .boxes import cxcywh_to_xyxy, xyxy_to_cxcywh

__all__ = ["Predictions", "from_deploy_layout", "to_deploy_layout"]


@dataclass(frozen=True)
class Predictions:
    """Decoded, not yet post-processed predictions of a batch: N candidate boxes per image.

    A head gives either per-class scores (``class_scores``, every dense or set-prediction head here), or one
    score and one label per box (``scores`` + ``labels``). The score of box n for class c is
    ``objectness[n] * class_scores[n, c]`` when the head has an objectness (YOLOX computes its scores so, and so
    does post-processing: YOLOX's detections stay bit-identical), else ``class_scores[n, c]``.

    Attributes:
        boxes: (B, N, 4) float ``x1, y1, x2, y2`` in input pixels (of the letterboxed network input).
        class_scores: (B, N, C) class probabilities in [0, 1]; None when the head gives ``scores`` / ``labels``.
        objectness: (B, N) probability that box n holds an object, a factor of each of its class scores; None
            for heads without one.
        scores: (B, N) each box's score for its ``labels`` class (heads with one label per box); None with
            ``class_scores``.
        labels: (B, N) int64 class of each box, with ``scores``.
    """

    boxes: Tensor
    class_scores: Tensor | None = None
    objectness: Tensor | None = None
    scores: Tensor | None = None
    labels: Tensor | None = None

    def __post_init__(self) -> None:
        if torch.jit.is_tracing():  # an export graph: the shapes are symbolic and were checked in eager runs
            return
        b = self.boxes
        if b.dim() != 3 or b.shape[-1] != 4:
            raise ValueError(f"Predictions.boxes must be (B, N, 4) xyxy, got {tuple(b.shape)}")
        if (self.class_scores is None) == (self.scores is None):
            raise ValueError("Predictions: give class_scores (B, N, C) or scores + labels (B, N), exactly one of them")
        if self.class_scores is not None:
            c = self.class_scores
            if c.dim() != 3 or c.shape[:2] != b.shape[:2] or c.shape[-1] < 1:
                raise ValueError(f"Predictions.class_scores must be (B, N, C) with C >= 1 for boxes {tuple(b.shape)}, "
                                 f"got {tuple(c.shape)}")
        else:
            if self.labels is None or self.scores.shape != b.shape[:2] or self.labels.shape != b.shape[:2]:
                raise ValueError(f"Predictions.scores and .labels must both be (B, N) = {tuple(b.shape[:2])}")
        if self.objectness is not None and self.objectness.shape != b.shape[:2]:
            raise ValueError(f"Predictions.objectness must be (B, N) = {tuple(b.shape[:2])}, "
                             f"got {tuple(self.objectness.shape)}")

    @property
    def batch_size(self) -> int:
        return self.boxes.shape[0]

    @property
    def num_boxes(self) -> int:
        """N, the candidates per image."""
        return self.boxes.shape[1]

    def float(self) -> Predictions:
        """Every floating tensor as float32 (post-processing works in float32; labels stay int64)."""
        return Predictions(*(None if t is None else t if t is self.labels else t.float()
                             for t in (self.boxes, self.class_scores, self.objectness, self.scores, self.labels)))

    def best_class(self) -> tuple[Tensor, Tensor]:
        """Each box's best class: ``scores`` (B, N) float and ``labels`` (B, N) int64 (single-label scoring).

        With an objectness the score is ``objectness * max_c class_scores`` -- YOLOX's order of operations, so
        scores are bit-identical to YOLOX's.
        """
        if self.class_scores is None:
            return self.scores, self.labels
        best, labels = self.class_scores.max(-1)
        return (best if self.objectness is None else self.objectness * best), labels

    def score_matrix(self) -> Tensor:
        """(B, N, C) score of every (box, class) pair: ``objectness * class_scores`` (or ``class_scores``); for a
        record with one label per box, its score in its class's column and 0 elsewhere."""
        if self.class_scores is None:
            raise ValueError("Predictions.score_matrix: this record has one label per box (scores + labels), no "
                             "per-class scores")
        return self.class_scores if self.objectness is None else self.objectness[..., None] * self.class_scores


def to_deploy_layout(preds: Predictions, num_classes: int | None = None) -> Tensor:
    """A record in the layout exported files hold: (B, N, 5 + C) ``cx, cy, w, h`` input px, objectness (1 for a
    head without one), class probabilities. Traceable (the export graph ends with it).

    A record with one label per box becomes a one-hot class block scaled by its score (``num_classes`` C needed).
    """
    cxcywh = xyxy_to_cxcywh(preds.boxes)
    if preds.class_scores is not None:
        cls = preds.class_scores
    else:
        if num_classes is None:
            raise ValueError("to_deploy_layout: a record with scores + labels needs num_classes")
        cls = torch.nn.functional.one_hot(preds.labels.long(), num_classes).to(preds.scores.dtype) * preds.scores[..., None]
    obj = preds.objectness[..., None] if preds.objectness is not None else torch.ones_like(cxcywh[..., :1])
    return torch.cat((cxcywh, obj.to(cxcywh.dtype), cls.to(cxcywh.dtype)), -1)


def from_deploy_layout(out: Tensor) -> Predictions:
    """A deployed file's (B, N, 5 + C) output (see :func:`to_deploy_layout`) as a record: boxes to xyxy, the
    objectness column as the objectness factor (a column of ones multiplies exactly, so scores do not change)."""
    if out.dim() != 3 or out.shape[-1] < 6:
        raise ValueError(f"deployed predictions must be (B, N, 5 + C) with C >= 1, got {tuple(out.shape)}")
    out = out.float()
    return Predictions(boxes=cxcywh_to_xyxy(out[..., :4]), class_scores=out[..., 5:],
                       objectness=out[..., 4])
