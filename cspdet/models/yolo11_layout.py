"""YOLO11's and YOLO26's layer layouts assembled from cspdet parts: :class:`~cspdet.models.elan_backbone.C2fNet` with
C3k2 stages and C2PSA -> :class:`~cspdet.models.elan_pan.C2fPAN` of C3k2 stages ->
:class:`~cspdet.models.tal_head.TaskAlignedHead` with the light (depthwise-separable) class branch.

Layout facts (the two published model definitions; depth / width multipliers d, w and a channel cap):

* channels ``ch(c) = ceil(min(c, max_channels) * w / 8) * 8``; repeats ``n(2) = max(round(2 * d), 1)``;
* backbone: stem Conv 3x3/2 to ch(64) -> four stages [Conv 3x3/2 to ch(128, 256, 512, 1024), C3k2(n(2)) to
  ch(256, 512, 512, 1024)]; the first two C3k2 have block width 0.25 and plain bottlenecks, the last two C3k blocks
  (at m / l / x every C3k2 has C3k blocks) -> SPPF(k=5) -> C2PSA(n(2)); features at strides 8 / 16 / 32 have
  ch(512, 512, 1024) channels;
* neck: PAN of C3k2(n(2)) stages with outputs ch(256, 512, 1024): YOLO11 n / s use plain bottlenecks except C3k in
  the last stage; YOLO26 uses C3k everywhere and its last stage is one C3k2 block with attention
  (``BottleneckPSA``);
* head: task-aligned, box branch as YOLOv8's, class branch of two depthwise-separable units (``cls_branch="dw"``);
  YOLO11 keeps DFL (reg_max 16) and NMS; YOLO26 regresses distances directly (reg_max 1) and adds the one-to-one
  branch (NMS-free inference), and its SPPF adds its input back (``shortcut``) after a linear first conv.

Parameter counts at 80 classes equal the published ones: YOLO11n 2,624,080, YOLO11s 9,458,752 (with the 16 fixed
DFL weights, as published), YOLO26n 2,572,280, YOLO26s 10,009,784 (both branches of the head).
"""

from __future__ import annotations

from typing import Any

from .detector import Detector
from .spec import BackboneSpec, DetectorSpec, NeckSpec, StageSpec
from .yolov8_layout import tal_head_spec, yolov8_channels

__all__ = ["YOLO11_SIZES", "yolo11_spec", "yolo26_spec", "yolo26_layout"]

#: YOLO11 / YOLO26 sizes: name -> (depth multiplier, width multiplier, max channels).
YOLO11_SIZES: dict[str, tuple[float, float, int]] = {
    "n": (0.50, 0.25, 1024),
    "s": (0.50, 0.50, 1024),
    "m": (0.50, 1.00, 512),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.50, 512),
}


def _c3k2_spec(
    num_classes: int, depth: float, width: float, max_channels: int, *, version: int, reg_max: int,
    one2one: bool, act: str, prior_prob: float | None, head_options: dict[str, Any] | None,
) -> DetectorSpec:
    """The shared layout of :func:`yolo11_spec` (``version=11``) and :func:`yolo26_spec` (``version=26``)."""
    if not depth > 0 or not width > 0:
        raise ValueError(f"yolo{version}: depth and width must be > 0, got depth={depth}, width={width}")
    c = yolov8_channels(width, max_channels)  # ch(64, 128, 256, 512, 1024)
    n = max(round(2 * depth), 1)
    big = width >= 1.0  # m / l / x: every C3k2 has C3k blocks (the published scales turn them on there)
    outs, downs = (c[2], c[3], c[3], c[4]), (c[1], c[2], c[3], c[4])
    stages = tuple(
        StageSpec(n, out, "", True, dict(down_channels=down, c3k=big or i >= 2,
                                         **({"expansion": 0.25} if i < 2 else {})))
        for i, (out, down) in enumerate(zip(outs, downs)))
    sppf = {"sppf_options": {"shortcut": True, "conv1_act": False}} if version == 26 else {}
    backbone = BackboneSpec(
        stages=stages, kind="c2fnet", stem_channels=c[0], stem_type="conv", norm="yolox_bn", act=act, num_classes=0,
        features_only=True, weight_init="torch",
        options={"stage": "c3k2", "sppf": True, "sppf_kernel": 5, **sppf, "psa_blocks": n},
    )
    # Neck stages in module order: top-down P3, top-down P4, bottom-up P4, bottom-up P5.
    if version == 26:
        overrides = [{"c3k": True}, {"c3k": True}, {"c3k": True}, {"c3k": True, "attn": True, "num_blocks": 1}]
    else:
        overrides = [{"c3k": big}, {"c3k": big}, {"c3k": big}, {"c3k": True}]
    neck = NeckSpec("c2fpan", (c[2], c[3], c[4]), n, False, "yolox_bn", act,
                    {"stage_fn": "c3k2", "stage_kwargs": {}, "stage_overrides": overrides})
    head = tal_head_spec(num_classes, reg_max, one2one, act, prior_prob, {"cls_branch": "dw", **(head_options or {})})
    return DetectorSpec(backbone, neck, head)


def yolo11_spec(num_classes: int = 80, depth: float = 0.50, width: float = 0.25, max_channels: int = 1024,
                reg_max: int = 16, one2one: bool = False, act: str = "silu", prior_prob: float | None = None,
                head_options: dict[str, Any] | None = None) -> DetectorSpec:
    """YOLO11's layout as data (defaults: YOLO11n; the ``yolo11`` family of :data:`cspdet.models.FAMILIES`).

    Args:
        num_classes: C.
        depth, width, max_channels: the scaling (:data:`YOLO11_SIZES`).
        reg_max: DFL bins (16); 1 = direct distance regression.
        one2one: add the one-to-one branch for NMS-free inference.
        act: activation name; prior_prob: class prior (None: the per-level prior).
        head_options: more :class:`~cspdet.models.tal_head.TaskAlignedHead` options.
    """
    return _c3k2_spec(num_classes, depth, width, max_channels, version=11, reg_max=reg_max, one2one=one2one, act=act,
                      prior_prob=prior_prob, head_options=head_options)


def yolo26_spec(num_classes: int = 80, depth: float = 0.50, width: float = 0.25, max_channels: int = 1024,
                reg_max: int = 1, one2one: bool = True, act: str = "silu", prior_prob: float | None = None,
                head_options: dict[str, Any] | None = None) -> DetectorSpec:
    """YOLO26's layout as data (defaults: YOLO26n: direct regression, NMS-free one-to-one branch; the ``yolo26``
    family of :data:`cspdet.models.FAMILIES`). Arguments as :func:`yolo11_spec`."""
    return _c3k2_spec(num_classes, depth, width, max_channels, version=26, reg_max=reg_max, one2one=one2one, act=act,
                      prior_prob=prior_prob, head_options=head_options)


def yolo26_layout(depth: float = 0.50, width: float = 0.25, num_classes: int = 80, **kwargs: Any) -> Detector:
    """A :class:`~cspdet.models.Detector` with YOLO26's layout (defaults: YOLO26n), built from :func:`yolo26_spec`;
    ``kwargs`` as its arguments."""
    return Detector.from_spec(yolo26_spec(num_classes, depth, width, **kwargs))
