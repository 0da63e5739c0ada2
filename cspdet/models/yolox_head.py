"""Anchor-free decoupled detection head (YOLOX), which also owns its decoding, its training loss and its schedule
(the L1 loss in the no-augmentation tail); it implements :class:`cspdet.models.contracts.DetectionHead`.

Per pyramid level: a 1x1 stem to ``hidden_channels``, then two parallel branches of two 3x3 convs each --
the classification branch ends in a 1x1 conv to ``num_classes`` logits, the regression branch in a 1x1 conv
to 4 box values and a 1x1 conv to 1 objectness logit. One prediction per grid point ("anchor-free"):
box centre = (dx + cell x, dy + cell y) * stride, box size = exp(log w, log h) * stride.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from ..det.simota import SimOTAAssigner
from ..det.boxes import cxcywh_to_xyxy, decode_boxes, grid_points
from ..det.yolox_loss import SimOTALoss
from ..det.predictions import Predictions
from ..det.targets import Targets, as_targets
from .contracts import HeadBase, Phase
from .layers import ActLayer, ConvBNAct, DWConv, NormLayer, YoloxBatchNorm2d
from .registry import ACTIVATIONS, HEADS, NORMS, SpecError
from .spec import HeadSpec

__all__ = ["HeadOutputs", "DecoupledHeadLevel", "DecoupledHead"]

# Loss settings a spec records only when they differ from YOLOX's (so equal networks have equal specs).
_LOSS_DEFAULTS = {"reg_weight": 5.0, "iou_type": "iou"}


class HeadOutputs(NamedTuple):
    """Raw head outputs of all levels, concatenated over the A = sum(H_l * W_l) prediction points.

    Points are ordered level by level (stride 8 first), row-major within a level.
    """

    reg: Tensor
    """(B, A, 4) raw box regression (dx, dy, log w, log h) in grid units."""
    obj: Tensor
    """(B, A) objectness logits."""
    cls: Tensor
    """(B, A, C) class logits."""
    sizes: tuple[tuple[int, int], ...]
    """(H, W) of each level's grid."""


class DecoupledHeadLevel(nn.Module):
    """The head of one pyramid level.

    Shapes: (B, C_in, H, W) -> reg (B, 4, H, W), obj (B, 1, H, W), cls (B, num_classes, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        num_classes: int,
        depthwise: bool = False,
        norm: NormLayer = YoloxBatchNorm2d,
        act: ActLayer | None = nn.SiLU,
    ) -> None:
        super().__init__()

        def conv3x3() -> nn.Module:
            if depthwise:
                return DWConv(hidden_channels, hidden_channels, 3, norm=norm, act=act)
            return ConvBNAct(hidden_channels, hidden_channels, 3, norm=norm, act=act)

        self.stem = ConvBNAct(in_channels, hidden_channels, 1, norm=norm, act=act)
        self.cls_convs = nn.Sequential(conv3x3(), conv3x3())
        self.reg_convs = nn.Sequential(conv3x3(), conv3x3())
        self.cls_pred = nn.Conv2d(hidden_channels, num_classes, 1)
        self.reg_pred = nn.Conv2d(hidden_channels, 4, 1)
        self.obj_pred = nn.Conv2d(hidden_channels, 1, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.stem(x)
        cls_feat = self.cls_convs(x)
        reg_feat = self.reg_convs(x)
        return self.reg_pred(reg_feat), self.obj_pred(reg_feat), self.cls_pred(cls_feat)


class DecoupledHead(HeadBase):
    """Decoupled anchor-free head over several pyramid levels, with SimOTA training loss and decoding.

    Args:
        num_classes: number of classes C.
        in_channels: channels of each input feature map (one per stride).
        hidden_channels: width of the stems and branches (YOLOX: ``int(256 * width)``).
        strides: input pixels per grid cell of each level.
        depthwise: depthwise-separable 3x3 convs in the branches (YOLOX-Nano).
        norm, act: norm and activation factories of the conv units.
        prior_prob: initial foreground probability of the cls and obj outputs (bias init), YOLOX 0.01.
        reg_weight: weight of the IoU loss (YOLOX 5.0).
        iou_type: ``"iou"`` (1 - IoU^2, YOLOX) or ``"giou"``.
        assigner: label assigner; default :class:`cspdet.det.SimOTAAssigner` with YOLOX settings.

    Attributes:
        use_l1: add the L1 regression loss; :meth:`set_epoch` switches it on in the no-augmentation phase.
        loss_keys: the scalar losses :meth:`loss` returns that the trainer logs (``loss`` first).

    Built from a spec by :meth:`from_spec` (``HeadSpec.hidden_channels``, ``depthwise``, ``norm``, ``act``,
    ``prior_prob``; options ``reg_weight``, ``iou_type``). COCO evaluation keeps one class per box, as YOLOX's
    evaluator (so mAP equals YOLOX's).
    """

    loss_keys = ("loss", "iou_loss", "obj_loss", "cls_loss", "l1_loss")
    SPEC_FIELDS = ("hidden_channels", "depthwise", "norm", "act", "prior_prob")
    multi_label = False

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int],
        hidden_channels: int,
        strides: Sequence[int] = (8, 16, 32),
        depthwise: bool = False,
        norm: NormLayer = YoloxBatchNorm2d,
        act: ActLayer | None = nn.SiLU,
        prior_prob: float = 0.01,
        reg_weight: float = _LOSS_DEFAULTS["reg_weight"],
        iou_type: Literal["iou", "giou"] = _LOSS_DEFAULTS["iou_type"],
        assigner: SimOTAAssigner | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"DecoupledHead: num_classes must be >= 1, got {num_classes}")
        if len(in_channels) != len(strides):
            raise ValueError(
                f"DecoupledHead: {len(in_channels)} in_channels {list(in_channels)} but {len(strides)} strides"
            )
        self.num_classes = num_classes
        self.strides = tuple(int(s) for s in strides)
        self.use_l1 = False
        self._spec_args = dict(hidden_channels=hidden_channels, depthwise=depthwise, norm=norm, act=act,
                               prior_prob=prior_prob, reg_weight=reg_weight, iou_type=iou_type, assigner=assigner)
        self.levels = nn.ModuleList(
            DecoupledHeadLevel(c, hidden_channels, num_classes, depthwise, norm, act) for c in in_channels
        )
        self.loss_fn = SimOTALoss(num_classes, reg_weight=reg_weight, iou_type=iou_type, assigner=assigner)
        self.initialize_biases(prior_prob)

    @property
    def spec(self) -> HeadSpec:
        """This head as data (the input channels come from the neck it is built on)."""
        a = self._spec_args
        if a["assigner"] is not None:
            raise SpecError("DecoupledHead: a head built with a custom assigner object cannot be described as data")
        return HeadSpec("yolox", self.num_classes, a["hidden_channels"], self.strides, a["depthwise"],
                        NORMS.name_of(a["norm"]), None if a["act"] is None else ACTIVATIONS.name_of(a["act"]),
                        a["prior_prob"], {k: a[k] for k in ("reg_weight", "iou_type") if a[k] != _LOSS_DEFAULTS[k]})

    def initialize_biases(self, prior_prob: float) -> None:
        """Set cls and obj biases so every sigmoid output starts at ``prior_prob`` (focal-loss style init):
        without it the many background points swamp the first iterations with a huge objectness loss."""
        bias = -math.log((1 - prior_prob) / prior_prob)
        for level in self.levels:
            nn.init.constant_(level.cls_pred.bias, bias)
            nn.init.constant_(level.obj_pred.bias, bias)

    def forward(self, features: Sequence[Tensor]) -> HeadOutputs:
        """Run every level.

        Args:
            features: one (B, C_l, H_l, W_l) map per stride, finest first.

        Returns:
            :class:`HeadOutputs` with raw (undecoded, pre-sigmoid) outputs.
        """
        if len(features) != len(self.levels):
            raise ValueError(f"DecoupledHead: expected {len(self.levels)} feature maps, got {len(features)}")
        regs, objs, clss, sizes = [], [], [], []
        for level, x in zip(self.levels, features):
            reg, obj, cls = level(x)
            sizes.append((x.shape[-2], x.shape[-1]))
            # (B, K, H, W) -> (B, H*W, K): row-major points, matching grid_points.
            regs.append(reg.flatten(2).transpose(1, 2))
            objs.append(obj.flatten(1))
            clss.append(cls.flatten(2).transpose(1, 2))
        return HeadOutputs(torch.cat(regs, 1), torch.cat(objs, 1), torch.cat(clss, 1), tuple(sizes))

    def _grid(self, out: HeadOutputs) -> tuple[Tensor, Tensor]:
        # Always float32: decoding in half precision would lose pixels at large coordinates (and exp overflows).
        return grid_points(out.sizes, self.strides, device=out.reg.device, dtype=torch.float32)

    def set_epoch(self, epoch: int, epochs: int, phase: Phase = "train") -> None:
        """YOLOX's schedule: the L1 loss joins in the no-augmentation phase (and stays on, as in YOLOX)."""
        if phase == "no_aug":
            self.use_l1 = True

    def decode(self, out: HeadOutputs) -> Predictions:
        """Eval-mode predictions: boxes (B, A, 4) xyxy input px, objectness (B, A) and class probabilities
        (B, A, C); a point's score for class c is ``objectness * class_prob[c]``, as YOLOX computes it."""
        points, strides = self._grid(out)
        boxes = cxcywh_to_xyxy(decode_boxes(out.reg.float(), points, strides))
        return Predictions(boxes=boxes, class_scores=out.cls.float().sigmoid(), objectness=out.obj.float().sigmoid())

    def loss(self, out: HeadOutputs, targets: Targets, target_mask: Tensor | None = None) -> dict[str, Tensor]:
        """SimOTA assignment and YOLOX losses.

        Args:
            out: raw outputs from :meth:`forward`.
            targets: the batch's :class:`~cspdet.det.targets.Targets` (boxes xyxy input px; M may be 0).
            target_mask: deprecated: only with a packed (B, M, 5) ``targets`` tensor, its (B, M) mask.

        Returns:
            dict of scalar tensors: ``loss``, ``iou_loss`` (weighted), ``obj_loss``, ``cls_loss``, ``l1_loss``,
            ``num_fg`` (see :class:`cspdet.det.SimOTALoss`).
        """
        targets = as_targets(targets, target_mask, caller="DecoupledHead.loss")
        points, strides = self._grid(out)
        pred_boxes = box_convert(decode_boxes(out.reg.float(), points, strides), "cxcywh", "xyxy")
        return self.loss_fn(out.cls, out.obj, out.reg, pred_boxes, points, strides, targets, use_l1=self.use_l1)


HEADS.register("yolox", DecoupledHead)
