"""The detection head contract: what the detector, the trainer, the evaluator and the exporters may ask of a head.

A head family is one class registered in :data:`cspdet.models.HEADS` under its ``HeadSpec.kind``. The rest of
cspdet only uses what :class:`DetectionHead` declares:

* ``from_spec(spec, in_channels)`` -- build from its own :class:`~cspdet.models.spec.HeadSpec` (its ``options``
  are the family's own constructor arguments; the common fields are read as far as the family uses them) on a
  neck with ``in_channels`` (one per stride);
* ``forward(features) -> raw`` -- whatever the family's loss and decoding need (a NamedTuple of tensors);
* ``loss(raw, targets) -> {name: scalar}`` -- ``targets`` a :class:`~cspdet.det.targets.Targets` record (boxes,
  labels, mask, per-box extras); ``loss`` (what to backpropagate) first, every key of ``loss_keys`` (what the
  trainer logs; ``num_fg`` etc. may come on top);
* ``decode(raw) -> Predictions`` -- the typed record of :mod:`cspdet.det.predictions`, which post-processing,
  the evaluator, the predictor and the export graphs read;
* ``set_epoch(epoch, epochs, phase)`` -- the head's own schedule, called by the trainer at the start of every epoch
  (a pure function of its arguments, so a resumed run continues exactly): YOLOX switches its L1 loss on in the
  no-augmentation tail, the task-aligned head hands weight from its one-to-many to its one-to-one branch;
* ``eval_defaults`` (:class:`HeadEvalDefaults`), ``nms_free`` (settable inference mode), ``num_classes``,
  ``strides``, ``spec``.

:class:`HeadBase` is an optional base class with the parts most heads share (no schedule, no NMS-free mode,
``from_spec`` mapping the common HeadSpec fields to constructor keywords).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from torch import Tensor, nn

from ..det.postprocess import postprocess as _postprocess
from ..det.predictions import Predictions
from ..det.targets import Targets
from .registry import ACTIVATIONS, NORMS
from .spec import HeadSpec

__all__ = ["PHASES", "DetectionHead", "HeadBase", "HeadEvalDefaults", "Phase"]

#: Training phases the trainer reports to ``set_epoch``: ``"train"`` (the main part, augmentation on) and
#: ``"no_aug"`` (YOLOX's no-augmentation tail). A head ignores the phases it has nothing to do in.
Phase = Literal["train", "no_aug"]
PHASES: tuple[str, ...] = ("train", "no_aug")


@dataclass(frozen=True)
class HeadEvalDefaults:
    """How a head family is scored by default (COCO evaluation; ``predict`` keeps its own conf / IoU).

    Attributes:
        conf, iou, max_det: evaluation score threshold, NMS IoU, detections per image (COCO: 0.001, 0.65, 300).
        multi_label: every class above ``conf`` of a box is a candidate (YOLOv8's validator) rather than its
            best class only (YOLOX's evaluator, so YOLOX's mAP is reproduced).
        nms_free: predictions come from a one-to-one branch as top-k, no NMS.
    """

    conf: float = 0.001
    iou: float = 0.65
    max_det: int = 300
    multi_label: bool = False
    nms_free: bool = False


@runtime_checkable
class DetectionHead(Protocol):
    """The detection head contract (see the module docstring). ``isinstance(head, DetectionHead)`` checks that
    every member is present."""

    num_classes: int
    strides: tuple[int, ...]
    loss_keys: tuple[str, ...]
    nms_free: bool

    @classmethod
    def from_spec(cls, spec: HeadSpec, in_channels: Sequence[int]) -> DetectionHead:
        """A randomly initialised head as ``spec`` describes it, on input maps of ``in_channels`` channels."""

    @property
    def spec(self) -> HeadSpec:
        """This head as data (what :meth:`from_spec` builds it from again)."""

    @property
    def eval_defaults(self) -> HeadEvalDefaults:
        """The family's evaluation convention (with the current ``nms_free`` mode)."""

    def forward(self, features: Sequence[Tensor]) -> Any:
        """(B, C_l, H_l, W_l) maps, one per stride, finest first -> raw outputs (the family's own type)."""

    def loss(self, raw: Any, targets: Targets) -> dict[str, Tensor]:
        """Raw training outputs and the batch's :class:`~cspdet.det.targets.Targets` (``boxes`` (B, M, 4) xyxy input
        px, ``labels`` (B, M) int64, ``mask`` (B, M) bool, ``extras``) -> scalar losses: ``loss`` and every key of
        ``loss_keys``."""

    def decode(self, raw: Any) -> Predictions:
        """Raw eval outputs -> :class:`~cspdet.det.predictions.Predictions` (boxes xyxy input px, scores)."""

    def set_epoch(self, epoch: int, epochs: int, phase: Phase) -> None:
        """Follow the training schedule at the start of epoch ``epoch`` (0-based) of ``epochs``, in ``phase``."""


class HeadBase(nn.Module):
    """Shared defaults for a :class:`DetectionHead` implementation (subclass it and ``nn.Module`` comes with it).

    Subclasses set ``loss_keys``, ``num_classes``, ``strides`` and implement ``forward``, ``loss``, ``decode`` and
    ``spec``; they override ``set_epoch`` when they follow a schedule, ``multi_label`` for multi-label evaluation,
    and ``nms_free`` when they have a one-to-one branch.

    :meth:`from_spec` calls ``cls(num_classes=..., in_channels=..., strides=..., **spec.options)`` plus those common
    HeadSpec fields named in :attr:`SPEC_FIELDS` (``norm`` / ``act`` resolved through their registries); a family
    with another construction overrides it.
    """

    #: The scalar losses a trainer logs, ``loss`` first (a class constant, or per instance where options add terms).
    loss_keys: tuple[str, ...] = ("loss",)
    #: Common HeadSpec fields this family's constructor takes (beyond num_classes, in_channels, strides).
    SPEC_FIELDS: ClassVar[tuple[str, ...]] = ()
    #: Whether COCO evaluation scores every class above conf per box (see :class:`HeadEvalDefaults`).
    multi_label: ClassVar[bool] = False

    num_classes: int
    strides: tuple[int, ...]

    @classmethod
    def from_spec(cls, spec: HeadSpec, in_channels: Sequence[int]) -> HeadBase:
        kwargs: dict[str, Any] = {"num_classes": spec.num_classes, "in_channels": list(in_channels),
                                  "strides": spec.strides}
        common = spec_fields(spec)
        kwargs.update({k: common[k] for k in cls.SPEC_FIELDS})
        return cls(**kwargs, **spec.options)

    @property
    def eval_defaults(self) -> HeadEvalDefaults:
        return HeadEvalDefaults(multi_label=self.multi_label, nms_free=self.nms_free)

    @property
    def eval_multi_label(self) -> bool:
        """``eval_defaults.multi_label`` (the name export metadata and older code use)."""
        return self.eval_defaults.multi_label

    @property
    def nms_free(self) -> bool:
        """True when predictions come from a one-to-one branch (top-k, no NMS); False for heads without one."""
        return False

    @nms_free.setter
    def nms_free(self, value: bool) -> None:
        if value:
            raise ValueError(f"{type(self).__name__} has no NMS-free (one-to-one) branch")

    def set_epoch(self, epoch: int, epochs: int, phase: Phase = "train") -> None:
        """No schedule: the head trains the same way in every epoch."""

    def postprocess(self, preds: Predictions | Tensor, conf: float = 0.25, iou: float = 0.45, max_det: int = 300,
                    classes: Sequence[int] | None = None, agnostic: bool = False, pre_nms_topk: int | None = None,
                    multi_label: bool = False) -> list[dict[str, Tensor]]:
        """:func:`cspdet.det.postprocess` in this head's current ``nms_free`` mode (kept for older code; the
        detector calls the function directly)."""
        return _postprocess(preds, conf, iou, max_det, classes, agnostic, pre_nms_topk, multi_label,
                           nms_free=self.nms_free)


def spec_fields(spec: HeadSpec) -> Mapping[str, Any]:
    """The common HeadSpec fields as constructor keywords (norm / act as factories)."""
    return {"hidden_channels": spec.hidden_channels, "depthwise": spec.depthwise, "norm": NORMS.get(spec.norm),
            "act": None if spec.act is None else ACTIVATIONS.get(spec.act), "prior_prob": spec.prior_prob}
