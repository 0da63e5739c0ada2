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

from .detector import Detector
from .spec import BackboneSpec, DetectorSpec, HeadSpec, NeckSpec, StageSpec

__all__ = ["YOLOV8_SIZES", "tal_head_spec", "yolov8_channels", "yolov8_layout", "yolov8_spec"]

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


def yolov8_spec(
    num_classes: int = 80,
    depth: float = 0.33,
    width: float = 0.25,
    max_channels: int = 1024,
    reg_max: int = 16,
    one2one: bool = False,
    act: str = "silu",
    prior_prob: float | None = None,
    head_options: dict[str, Any] | None = None,
) -> DetectorSpec:
    """YOLOv8's layout as data (the ``yolov8`` family of :data:`cspdet.models.FAMILIES`).

    Args:
        num_classes: C.
        depth, width, max_channels: YOLOv8's scaling (n: 0.33 / 0.25 / 1024, s: 0.33 / 0.50 / 1024).
        reg_max: DFL bins (16); 1 = direct distance regression (YOLO26 style).
        one2one: add the one-to-one branch for NMS-free inference (the default inference mode then).
        act: activation name; prior_prob: class prior (None: YOLOv8's per-level prior).
        head_options: more :class:`~cspdet.models.tal_head.TaskAlignedHead` options (``o2m_weight``,
            ``o2o_detach``, loss gains, ...).
    """
    if not depth > 0 or not width > 0:
        raise ValueError(f"yolov8: depth and width must be > 0, got depth={depth}, width={width}")
    c = yolov8_channels(width, max_channels)

    def n(k: int) -> int:
        return max(round(k * depth), 1)

    residual = {"block_kwargs": {"shortcut": True}}
    backbone = BackboneSpec(
        stages=tuple(StageSpec(n(k), ch, "", True, residual) for k, ch in zip((3, 6, 6, 3), c[1:])),
        kind="c2fnet", stem_channels=c[0], stem_type="conv", norm="yolox_bn", act=act, num_classes=0,
        features_only=True, weight_init="torch", options={"stage": "c2f", "sppf": True, "sppf_kernel": 5},
    )
    neck = NeckSpec("c2fpan", tuple(c[2:]), n(3), False, "yolox_bn", act)
    return DetectorSpec(backbone, neck, tal_head_spec(num_classes, reg_max, one2one, act, prior_prob, head_options))


def tal_head_spec(num_classes: int, reg_max: int = 16, one2one: bool = False, act: str = "silu",
                  prior_prob: float | None = None, head_options: dict[str, Any] | None = None) -> HeadSpec:
    """The task-aligned head at strides 8 / 16 / 32 as data; only options that differ from the head's defaults are
    recorded (so specs saved before an option existed compare equal)."""
    options = dict(head_options or {})
    # head_options win over the preset's own arguments (``model.head_options={one2one: false}`` drops the branch)
    reg_max, one2one = options.pop("reg_max", reg_max), options.pop("one2one", one2one)
    if reg_max != 16:
        options["reg_max"] = reg_max
    if one2one:
        options["one2one"] = True
    return HeadSpec("tal", num_classes, None, (8, 16, 32), False, "yolox_bn", act, prior_prob, options)


def yolov8_layout(depth: float = 0.33, width: float = 0.25, num_classes: int = 80, *, max_channels: int = 1024,
                  reg_max: int = 16, one2one: bool = False, act: str = "silu", prior_prob: float | None = None,
                  **head_options: Any) -> Detector:
    """A :class:`~cspdet.models.Detector` with YOLOv8's layout (defaults: YOLOv8n), built from
    :func:`yolov8_spec`: ``Detector(C2fNet, C2fPAN, TaskAlignedHead)``; training forward gives the head's loss
    dict, eval :meth:`~cspdet.models.Detector.predictions` a record without objectness (the eval forward gives the
    deploy layout (B, A, 5 + C), objectness column = 1)."""
    return Detector.from_spec(yolov8_spec(num_classes, depth, width, max_channels, reg_max, one2one, act, prior_prob,
                                          head_options))
