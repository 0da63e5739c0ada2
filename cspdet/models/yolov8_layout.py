"""YOLOv8's layer layout assembled from cspdet parts: :class:`C2fNet` -> :class:`C2fPAN` -> :class:`TaskAlignedHead`.

Layout facts (YOLOv8's model definition; depth/width multipliers d, w and a channel cap):

* channels ``ch(c) = ceil(min(c, max_channels) * w / 8) * 8``, repeats ``n(k) = max(round(k * d), 1)``;
* backbone: stem Conv 3x3/2 to ch(64) -> four stages [Conv 3x3/2, C2f(n, shortcut)] to ch(128, 256, 512, 1024)
  with n(3, 6, 6, 3) blocks -> SPPF(k=5); strides 8/16/32 come from the last three;
* neck: PAN with C2f(n(3), no shortcut), nearest upsampling, 3x3/2 down convs, no lateral convs, outputs
  ch(256, 512, 1024);
* head: per level box branch (2 x 3x3, 1x1 to 4 * 16) and class branch (2 x 3x3, 1x1 to C), DFL with 16 bins.

Parameter counts at 80 classes equal the published ones: YOLOv8n 3,157,200, YOLOv8s 11,166,560 (both count the
16 fixed DFL weights, as the published numbers do). BatchNorm eps 1e-3 / momentum 0.03, SiLU, PyTorch's default
conv init (YOLOv8 trains from it).
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from .detector import Detector
from .elan import C2fNet, C2fStage
from .elan_neck import C2fPAN
from .layers import ActLayer, NormLayer, YoloxBatchNorm2d
from .tal_head import TaskAlignedHead

__all__ = ["YOLOV8_SIZES", "yolov8_channels", "yolov8_layout"]

#: YOLOv8 sizes: name -> (depth multiplier, width multiplier, max channels).
YOLOV8_SIZES: dict[str, tuple[float, float, int]] = {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.25, 512),
}


def yolov8_channels(width: float, max_channels: int = 1024) -> list[int]:
    """Channels of the stem and the four stages, ``ceil(min(c, max_channels) * width / 8) * 8`` for
    c = 64, 128, 256, 512, 1024 (YOLOv8n: [16, 32, 64, 128, 256])."""
    return [int(math.ceil(min(c, max_channels) * width / 8) * 8) for c in (64, 128, 256, 512, 1024)]


def yolov8_layout(
    depth: float = 0.33,
    width: float = 0.25,
    num_classes: int = 80,
    *,
    max_channels: int = 1024,
    reg_max: int = 16,
    one2one: bool = False,
    norm: NormLayer = YoloxBatchNorm2d,
    act: ActLayer = nn.SiLU,
    **head_kwargs: Any,
) -> Detector:
    """A :class:`~cspdet.models.Detector` with YOLOv8's layout (defaults: YOLOv8n, see :data:`YOLOV8_SIZES`).

    Args:
        depth, width, max_channels: YOLOv8's scaling (n: 0.33 / 0.25 / 1024, s: 0.33 / 0.50 / 1024).
        num_classes: C.
        reg_max: DFL bins (16); 1 = direct distance regression (YOLO26 style).
        one2one: add the one-to-one branch for NMS-free inference (default inference mode then NMS-free).
        norm, act: norm and activation factories.
        head_kwargs: more :class:`~cspdet.models.tal_head.TaskAlignedHead` options (``cls_prior``,
            ``o2m_weight``, assigners, loss gains, ...).

    Returns:
        ``Detector(C2fNet, C2fPAN, TaskAlignedHead)``: training forward gives the head's loss dict, eval forward
        (B, A, 5 + C) YOLOX-layout predictions (objectness column = 1).
    """
    if depth <= 0 or width <= 0:
        raise ValueError(f"yolov8_layout: depth and width must be > 0, got depth={depth}, width={width}")
    c = yolov8_channels(width, max_channels)

    def n(k: int) -> int:
        return max(round(k * depth), 1)

    backbone = C2fNet(
        [(n(3), c[1]), (n(6), c[2]), (n(6), c[3]), (n(3), c[4])],
        stem_channels=c[0],
        stage_fn=C2fStage,
        stage_kwargs=dict(block_kwargs=dict(shortcut=True)),
        sppf=True,
        norm=norm,
        act=act,
    )
    neck = C2fPAN(backbone.out_channels, num_blocks=n(3), norm=norm, act=act)
    head = TaskAlignedHead(num_classes, neck.out_channels, strides=backbone.out_strides, reg_max=reg_max,
                           one2one=one2one, norm=norm, act=act, **head_kwargs)
    return Detector(backbone, neck, head)
