"""Task-aligned anchor-free head (YOLOv8 layout) with an optional one-to-one branch for NMS-free inference.

Per pyramid level, two decoupled branches (no shared stem, no objectness):

* box: two 3x3 conv units of width ``box_channels`` then a 1x1 conv to ``4 * reg_max`` -- per side a distribution
  over ``reg_max`` distance bins (decoded to its expectation, trained with DFL), or with ``reg_max == 1`` the
  distance itself (``softplus`` of the output, trained with L1);
* class: two 3x3 conv units of width ``cls_channels`` then a 1x1 conv to C logits; or (``cls_branch="dw"``,
  YOLO11 / YOLO26) two depthwise-separable units (depthwise 3x3 + 1x1, each with norm and activation), about a
  tenth of the class branch's multiply-adds at n scale.

A point at cell ``(i, j)`` of a level with stride s sits at the cell centre ``(j + 0.5, i + 0.5)`` (grid units) and
predicts its distances ``l, t, r, b`` (in strides) to the box sides: ``box = (x - l, y - t, x + r, y + b) * s``.

**One-to-one branch** (``one2one=True``; YOLOv10's consistent dual assignment, YOLO26's end-to-end head): a copy
of both branches with its own weights, trained beside the one-to-many branch with task-aligned matching of the
same metric (same alpha / beta) pruned to one point per object (``topk2 = 1``). Its features are detached
(``o2o_detach``, as YOLOv10), so only the one-to-many loss trains the backbone and the neck; its predictions
need no NMS. ``loss = o2m_weight * L_o2m + (1 - o2m_weight) * L_o2o``.

**Inference modes** (``nms_free``): ``True`` runs only the one-to-one branch, and post-processing takes the
top-k (point, class) scores; ``False`` runs only the one-to-many branch, and post-processing is the usual score
filter + class-aware NMS (:func:`cspdet.det.postprocess` with ``nms_free``). :meth:`decode` gives a
:class:`~cspdet.det.predictions.Predictions` record either way (no objectness: this head has none).

The head implements :class:`cspdet.models.contracts.DetectionHead`; its schedule (:meth:`set_epoch`) is YOLO26's
one-to-many -> one-to-one hand-over.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..det.boxes import cxcywh_to_xyxy, grid_points
from ..det.dfl import dfl_expectation
from ..det.predictions import Predictions
from ..det.tal import TaskAlignedAssigner
from ..det.tal_loss import TaskAlignedLoss, o2m_weight_schedule
from ..det.targets import Targets, as_targets
from .contracts import HeadBase, Phase
from .layers import ActLayer, ConvBNAct, DWConv, NormLayer, YoloxBatchNorm2d
from .registry import ACTIVATIONS, HEADS, NORMS, SpecError
from .spec import HeadSpec

__all__ = ["TALHeadOutputs", "TALHeadLevel", "TaskAlignedHead"]

# Constructor arguments a spec records (only where they differ from these defaults) -- everything but the assigners.
_SPEC_DEFAULTS = dict(reg_max=16, distance_act="softplus", box_channels=None, cls_channels=None, cls_branch="conv",
                      one2one=False, o2o_detach=True, o2o_assign="own", nms_free=None,
                      o2m_weight=0.8, o2m_final=0.1, box_weight=7.5, cls_weight=0.5, dfl_weight=1.5, prior_prob=None,
                      prior_image_size=640, norm=None, act=None)


class TALHeadOutputs(NamedTuple):
    """Raw outputs of all levels, concatenated over the A = sum(H_l * W_l) points (stride 8 first, row-major).

    A branch that did not run is ``None``: in training both run; in eval only the one ``nms_free`` selects.
    """

    box: Tensor | None
    """(B, A, 4 * reg_max) one-to-many box outputs: bin logits per side (side-major), or raw distances if reg_max 1."""
    cls: Tensor | None
    """(B, A, C) one-to-many class logits."""
    o2o_box: Tensor | None
    """(B, A, 4 * reg_max) one-to-one box outputs."""
    o2o_cls: Tensor | None
    """(B, A, C) one-to-one class logits."""
    sizes: tuple[tuple[int, int], ...]
    """(H, W) of each level's grid."""


class TALHeadLevel(nn.Module):
    """The branches of one level.

    Shapes: (B, C_in, H, W) -> box (B, 4 * reg_max, H, W), cls (B, num_classes, H, W).
    """

    def __init__(self, in_channels: int, box_channels: int, cls_channels: int, num_classes: int, reg_max: int,
                 norm: NormLayer = YoloxBatchNorm2d, act: ActLayer | None = nn.SiLU, cls_branch: str = "conv") -> None:
        super().__init__()
        self.box_convs = nn.Sequential(ConvBNAct(in_channels, box_channels, 3, norm=norm, act=act),
                                       ConvBNAct(box_channels, box_channels, 3, norm=norm, act=act))
        self.box_pred = nn.Conv2d(box_channels, 4 * reg_max, 1)
        if cls_branch == "dw":
            self.cls_convs = nn.Sequential(DWConv(in_channels, cls_channels, 3, norm=norm, act=act),
                                           DWConv(cls_channels, cls_channels, 3, norm=norm, act=act))
        elif cls_branch == "conv":
            self.cls_convs = nn.Sequential(ConvBNAct(in_channels, cls_channels, 3, norm=norm, act=act),
                                           ConvBNAct(cls_channels, cls_channels, 3, norm=norm, act=act))
        else:
            raise ValueError(f"TaskAlignedHead: cls_branch must be 'conv' or 'dw', got {cls_branch!r}")
        self.cls_pred = nn.Conv2d(cls_channels, num_classes, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.box_pred(self.box_convs(x)), self.cls_pred(self.cls_convs(x))


class TaskAlignedHead(HeadBase):
    """Decoupled anchor-free head with task-aligned assignment, DFL / CIoU / BCE losses, optional one-to-one branch.

    Args:
        num_classes: number of classes C.
        in_channels: channels of each input map (one per stride, finest first).
        strides: input pixels per grid cell of each level.
        reg_max: distance bins per side (YOLOv8: 16, so distances up to 15 strides); ``1`` = direct regression of
            the distances (YOLO26 dropped DFL for simpler export), trained with L1 in the ``dfl_loss`` slot.
        distance_act: with ``reg_max == 1``, how a raw output becomes a distance: ``"softplus"`` (cspdet's default:
            positive, no dead units) or ``"identity"`` (the raw value, as Ultralytics' YOLO26 decodes it; converted
            YOLO26 weights need it to give the same boxes).
        box_channels: width of the box branch (default YOLOv8's ``max(16, in_channels[0] // 4, 4 * reg_max)``).
        cls_channels: width of the class branch (default YOLOv8's ``max(in_channels[0], min(num_classes, 100))``).
        cls_branch: ``"conv"`` (YOLOv8: two 3x3 conv units) or ``"dw"`` (YOLO11 / YOLO26: two depthwise-separable
            units).
        one2one: add the one-to-one branch (separate weights, same structure).
        o2o_detach: the one-to-one branch sees detached features (YOLOv10): it cannot pull the shared features
            towards its sparse one-positive-per-object supervision; the backbone learns from the one-to-many
            loss only (so its gradient scales with ``o2m_weight``).
        o2o_assign: which predictions choose the one-to-one positive of each object: ``"own"`` (YOLOv10 / YOLO26:
            the one-to-one branch's own scores and boxes under the consistent matching metric) or ``"o2m"`` (the
            one-to-many branch's, detached: the one-to-one branch learns to fire where the dense branch is already
            best, a target that does not move with its own early noise).
        nms_free: inference mode, see the module docstring; default ``one2one``.
        o2m_weight: initial weight of the one-to-many loss (the one-to-one gets ``1 - o2m_weight``); YOLO26
            starts at 0.8 and decays it (:func:`cspdet.det.tal_loss.o2m_weight_schedule`). Ignored without
            ``one2one``.
        o2m_final: the one-to-many weight at the last epoch (YOLO26: 0.1); equal to ``o2m_weight`` = a constant
            mix. With detached one-to-one features the two branches share no parameter, so the mix only scales
            each branch's gradient: under SGD a per-branch learning-rate schedule, under Adam(W) a decay that the
            optimizer's second-moment history turns into a smaller step for the backbone late in a short run.
        assigner: one-to-many assigner (default YOLOv8's: topk 10, alpha 0.5, beta 6, CIoU, small-box widening).
        o2o_assigner: one-to-one assigner (default: the one-to-many metric -- same alpha, beta, overlap -- with
            topk 7 and ``topk2=1``, YOLO26's one-to-one settings).
        box_weight, cls_weight, dfl_weight: loss gains (YOLOv8: 7.5, 0.5, 1.5).
        prior_prob: initial class probability of every point; default YOLOv8's per-level prior ``5 / C /
            (prior_image_size / s)^2`` (about 5 objects per image, spread over classes and cells), which keeps the
            first iterations' background BCE small; a float sets one prior for every level (RetinaNet's 0.01).
        prior_image_size: image size of that per-level prior (640).
        norm, act: norm and activation factories of the conv units.

    Attributes:
        o2m_weight: settable by the trainer each epoch, in [0, 1].
        nms_free: settable inference mode (True needs ``one2one``).
        dfl_project: (reg_max,) bin values 0 .. reg_max - 1, a **frozen parameter** (not a buffer) so the parameter
            count equals YOLOv8's published one, which counts its fixed DFL conv weight; ``None`` if reg_max 1.
    """

    #: The weighted loss terms (the one-to-one branch's mix of both branches).
    mixed_keys = ("loss", "box_loss", "cls_loss", "dfl_loss")
    #: The HeadSpec fields :meth:`from_spec` passes (``hidden_channels`` / ``depthwise`` only to be refused: this
    #: head's widths are per branch, options ``box_channels`` / ``cls_channels``).
    SPEC_FIELDS = ("hidden_channels", "depthwise", "norm", "act", "prior_prob")
    #: COCO evaluation considers every class above conf per point (YOLOv8's validator); predict does not.
    multi_label = True

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int],
        strides: Sequence[int] = (8, 16, 32),
        reg_max: int = 16,
        distance_act: str = "softplus",
        hidden_channels: int | None = None,
        depthwise: bool = False,
        box_channels: int | None = None,
        cls_channels: int | None = None,
        cls_branch: str = "conv",
        one2one: bool = False,
        o2o_detach: bool = True,
        o2o_assign: str = "own",
        nms_free: bool | None = None,
        o2m_weight: float = 0.8,
        o2m_final: float = 0.1,
        assigner: TaskAlignedAssigner | None = None,
        o2o_assigner: TaskAlignedAssigner | None = None,
        box_weight: float = 7.5,
        cls_weight: float = 0.5,
        dfl_weight: float = 1.5,
        prior_prob: float | None = None,
        prior_image_size: int = 640,
        norm: NormLayer = YoloxBatchNorm2d,
        act: ActLayer | None = nn.SiLU,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"TaskAlignedHead: num_classes must be >= 1, got {num_classes}")
        if hidden_channels is not None or depthwise:  # the HeadSpec convention passes them; widths are per branch
            raise ValueError("TaskAlignedHead: set box_channels / cls_channels instead of hidden_channels; there is "
                             "no depthwise variant")
        if assigner is not None or o2o_assigner is not None:
            self._describable = False  # a custom assigner object is code, not data: no spec
        self._spec_args = {k: v for k, v in locals().items() if k in _SPEC_DEFAULTS}
        if len(in_channels) != len(strides):
            raise ValueError(f"TaskAlignedHead: {len(in_channels)} in_channels {list(in_channels)} but "
                             f"{len(strides)} strides")
        if isinstance(reg_max, bool) or not isinstance(reg_max, int) or reg_max < 1:
            raise ValueError(f"TaskAlignedHead: reg_max must be an integer >= 1, got {reg_max!r}")
        if distance_act not in ("softplus", "identity"):
            raise ValueError(f"TaskAlignedHead: distance_act must be 'softplus' or 'identity', got {distance_act!r}")
        self.num_classes, self.reg_max, self.distance_act = num_classes, reg_max, distance_act
        self.strides = tuple(int(s) for s in strides)
        if o2o_assign not in ("own", "o2m"):
            raise ValueError(f"TaskAlignedHead: o2o_assign must be 'own' or 'o2m', got {o2o_assign!r}")
        self.one2one, self.o2o_detach, self.o2o_assign = bool(one2one), bool(o2o_detach), o2o_assign
        c0 = int(in_channels[0])
        box_channels = max(16, c0 // 4, 4 * reg_max) if box_channels is None else box_channels
        cls_channels = max(c0, min(num_classes, 100)) if cls_channels is None else cls_channels
        self.levels = nn.ModuleList(TALHeadLevel(int(c), box_channels, cls_channels, num_classes, reg_max, norm, act,
                                                 cls_branch) for c in in_channels)
        self.dfl_project = (nn.Parameter(torch.arange(reg_max, dtype=torch.float32), requires_grad=False)
                            if reg_max > 1 else None)
        self.initialize_biases(prior_prob, prior_image_size)
        # Same structure, separate weights; built after the bias init so both branches start alike.
        self.o2o_levels = copy.deepcopy(self.levels) if self.one2one else None

        assigner = assigner or TaskAlignedAssigner(topk=10, alpha=0.5, beta=6.0)
        if o2o_assigner is None:  # consistent matching metric (YOLOv10): only the number of positives differs
            o2o_assigner = TaskAlignedAssigner(topk=7, alpha=assigner.alpha, beta=assigner.beta, topk2=1,
                                               iou_type=assigner.iou_type, small_box=assigner.small_box)
        gains = dict(box_weight=box_weight, cls_weight=cls_weight, dfl_weight=dfl_weight)
        self.loss_fn = TaskAlignedLoss(num_classes, reg_max, assigner, **gains)
        self.o2o_loss_fn = TaskAlignedLoss(num_classes, reg_max, o2o_assigner, **gains) if self.one2one else None
        for name, value in (("o2m_weight", o2m_weight), ("o2m_final", o2m_final)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"TaskAlignedHead: {name} must be in [0, 1], got {value}")
        # What a trainer logs: the mixed terms and, with the one-to-one branch, each branch's own total (the curves
        # that show whether the hand-over starves one of them).
        self.loss_keys = self.mixed_keys + (("o2m_loss", "o2o_loss") if self.one2one else ())
        self.o2m_weight = self._o2m_start = float(o2m_weight)
        self._o2m_final = float(o2m_final)
        self._nms_free = False
        self.nms_free = self.one2one if nms_free is None else nms_free

    def set_epoch(self, epoch: int, epochs: int, phase: Phase = "train") -> None:
        """Training schedule (called by the trainer at the start of each epoch): with the one-to-one branch, the
        one-to-many weight goes linearly from ``o2m_weight`` to ``o2m_final`` over the run (YOLO26's ProgLoss: 0.8
        -> 0.1), so the dense branch guides early training and the NMS-free branch owns the end."""
        if self.one2one:
            self.o2m_weight = o2m_weight_schedule(epoch / max(epochs - 1, 1), start=self._o2m_start,
                                                  end=self._o2m_final)

    @property
    def nms_free(self) -> bool:
        return self._nms_free

    @nms_free.setter
    def nms_free(self, value: bool) -> None:
        if value and not self.one2one:
            raise ValueError("TaskAlignedHead: nms_free inference needs the one-to-one branch (one2one=True)")
        self._nms_free = bool(value)

    @property
    def spec(self) -> HeadSpec:
        """This head as data (``kind="tal"``; options that differ from the defaults are recorded)."""
        if not getattr(self, "_describable", True):
            raise SpecError("TaskAlignedHead: a head built with custom assigner objects cannot be described as data")
        a = self._spec_args
        options = {k: a[k] for k in _SPEC_DEFAULTS if k not in ("norm", "act", "prior_prob") and a[k] != _SPEC_DEFAULTS[k]}
        return HeadSpec("tal", self.num_classes, None, self.strides, False, NORMS.name_of(a["norm"]),
                        None if a["act"] is None else ACTIVATIONS.name_of(a["act"]), a["prior_prob"], options)

    def initialize_biases(self, prior_prob: float | None = None, prior_image_size: int = 640) -> None:
        """Box biases 1.0 (YOLOv8; with DFL a uniform start, expected distance (reg_max - 1) / 2 strides) and class
        biases ``logit(p)`` with p = ``prior_prob`` or YOLOv8's per-level ``5 / C / (prior_image_size / s)^2``."""
        for level, s in zip(self.levels, self.strides):
            p = prior_prob if prior_prob is not None else 5 / self.num_classes / (prior_image_size / s) ** 2
            if not 0 < p < 1:
                raise ValueError(f"TaskAlignedHead: class prior must be in (0, 1), got {p}")
            nn.init.constant_(level.box_pred.bias, 1.0)
            nn.init.constant_(level.cls_pred.bias, math.log(p / (1 - p)))

    def _run(self, levels: nn.ModuleList, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        boxes, clss = [], []
        for level, x in zip(levels, features):
            box, cls = level(x)
            boxes.append(box.flatten(2).transpose(1, 2))  # (B, K, H, W) -> (B, H*W, K), row-major points
            clss.append(cls.flatten(2).transpose(1, 2))
        return torch.cat(boxes, 1), torch.cat(clss, 1)

    def forward(self, features: Sequence[Tensor]) -> TALHeadOutputs:
        """Run the branches the mode needs.

        Args:
            features: one (B, C_l, H_l, W_l) map per stride, finest first.

        Returns:
            :class:`TALHeadOutputs` with raw outputs; in training both branches, in eval only the selected one.
        """
        if len(features) != len(self.levels):
            raise ValueError(f"TaskAlignedHead: expected {len(self.levels)} feature maps, got {len(features)}")
        sizes = tuple((x.shape[-2], x.shape[-1]) for x in features)
        box = cls = o2o_box = o2o_cls = None
        if self.training or not self.nms_free:
            box, cls = self._run(self.levels, features)
        if self.one2one and (self.training or self.nms_free):
            o2o_in = [x.detach() for x in features] if self.o2o_detach else features
            o2o_box, o2o_cls = self._run(self.o2o_levels, o2o_in)
        return TALHeadOutputs(box, cls, o2o_box, o2o_cls, sizes)

    def distances(self, box: Tensor) -> Tensor:
        """(B, A, 4 * reg_max) raw box outputs -> (B, A, 4) ``l, t, r, b`` in strides (DFL expectation, or
        ``softplus`` of the raw value with reg_max 1: positive distances without dead units; the raw value itself
        with ``distance_act="identity"``)."""
        if self.dfl_project is None:
            return box.float() if self.distance_act == "identity" else F.softplus(box.float())
        return dfl_expectation(box.float(), self.dfl_project)

    def _anchors(self, sizes: Sequence[tuple[int, int]], device: torch.device) -> tuple[Tensor, Tensor]:
        cells, strides = grid_points(sizes, self.strides, device=device, dtype=torch.float32)
        return cells + 0.5, strides

    def decode(self, out: TALHeadOutputs) -> Predictions:
        """Eval-mode predictions of the branch ``nms_free`` selects: boxes (B, A, 4) xyxy input px and class
        probabilities (B, A, C); no objectness (this head has none)."""
        box, cls = (out.o2o_box, out.o2o_cls) if self.nms_free else (out.box, out.cls)
        if box is None or cls is None:
            raise ValueError(f"TaskAlignedHead.decode: the {'one-to-one' if self.nms_free else 'one-to-many'} branch "
                             f"did not run (outputs from another mode?)")
        points, strides = self._anchors(out.sizes, box.device)
        dist = self.distances(box)
        s = strides[:, None]
        # centre and size first, then corners: the same float operations as the detections before the record
        cxcy = (points + (dist[..., 2:] - dist[..., :2]) / 2) * s
        wh = (dist[..., :2] + dist[..., 2:]) * s
        boxes = cxcywh_to_xyxy(torch.cat((cxcy, wh), -1))
        return Predictions(boxes=boxes, class_scores=cls.float().sigmoid())

    def loss(self, out: TALHeadOutputs, targets: Targets, target_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Task-aligned assignment and losses of both branches.

        Args:
            out: raw outputs from :meth:`forward` in training mode.
            targets: the batch's :class:`~cspdet.det.targets.Targets` (boxes xyxy input px; M may be 0).
            target_mask: deprecated: only with a packed (B, M, 5) ``targets`` tensor, its (B, M) mask.

        Returns:
            dict of scalar tensors: ``loss`` (to backpropagate), and detached ``box_loss``, ``cls_loss``,
            ``dfl_loss`` (weighted; with the one-to-one branch the ``o2m_weight`` mix of both branches, so they
            sum to ``loss``), ``num_fg`` (one-to-many positives); with the one-to-one branch also ``o2m_loss``,
            ``o2o_loss`` (each branch's unmixed total) and ``o2o_num_fg``.
        """
        if out.box is None or out.cls is None:
            raise ValueError("TaskAlignedHead.loss needs training-mode outputs (call .train() before forward)")
        targets = as_targets(targets, target_mask, caller="TaskAlignedHead.loss")
        points, strides = self._anchors(out.sizes, out.box.device)
        o2m_dist = self.distances(out.box)
        o2m = self.loss_fn(out.box, o2m_dist, out.cls, points, strides, targets)
        if not self.one2one:
            return o2m
        if out.o2o_box is None or out.o2o_cls is None:
            raise ValueError("TaskAlignedHead.loss: the one-to-one outputs are missing")
        o2m_preds = (out.cls, o2m_dist) if self.o2o_assign == "o2m" else None  # decoded once, for both
        o2o = self.o2o_loss_fn(out.o2o_box, self.distances(out.o2o_box), out.o2o_cls, points, strides, targets,
                               assign_from=o2m_preds)
        w = float(self.o2m_weight)
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"TaskAlignedHead: o2m_weight must be in [0, 1], got {w}")
        mixed = {k: w * o2m[k] + (1 - w) * o2o[k] for k in self.mixed_keys}
        return {**mixed, "num_fg": o2m["num_fg"], "o2m_loss": o2m["loss"].detach(), "o2o_loss": o2o["loss"].detach(),
                "o2o_num_fg": o2o["num_fg"]}


HEADS.register("tal", TaskAlignedHead)
