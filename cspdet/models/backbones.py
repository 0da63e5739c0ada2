"""Published CSP backbones as data: each preset is a :class:`~cspdet.models.spec.BackboneSpec`.

* ``csp_resnet50`` / ``csp_resnext50_32x4d`` / ``csp_darknet53``: timm's ``cspresnet50`` / ``cspresnext50`` /
  ``cspdarknet53`` layer for layer (weights via :func:`cspdet.models.load_timm_weights`).
* ``cspdarknet(depth, width)``: YOLOX's ``CSPDarknet`` (the backbone of YOLOX-Nano ... X).

The ``*_spec`` functions give the data; the functions of the same name without ``_spec`` build the
:class:`~cspdet.models.CSPNet` (``CSPNet.from_spec``), taking any ``CSPNet`` argument as an override.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from .cspnet import CSPNet
from .spec import BackboneSpec, StageSpec

__all__ = [
    "CSPDARKNET_SIZES",
    "csp_darknet53",
    "csp_darknet53_spec",
    "csp_resnet50",
    "csp_resnet50_spec",
    "csp_resnext50_32x4d",
    "csp_resnext50_32x4d_spec",
    "cspdarknet",
    "cspdarknet_spec",
]

# timm layouts (facts from timm's model configs): every stage has a 3x3 stride-2 down conv (none in the stride-1
# first stage of the ResNe(X)t variants), a 1x1 expand conv, a 50/50 split, a partial transition on the block
# branch and a 1x1 fuse; leaky ReLU (slope 0.01) everywhere.


def csp_resnet50_spec(num_classes: int = 1000) -> BackboneSpec:
    """CSPResNet-50 (CSPNet paper), layer-for-layer timm ``cspresnet50``: 21,616,168 parameters at 1000 classes.

    Stem 7x7/2 conv + max-pool to 64 channels; stages (3, 3, 5, 2) blocks, widths 128/256/512/1024, strides
    4/8/16/32; expand to 2x the stage width (linear), ResNet bottlenecks with hidden = width / 4 of the expand.
    """
    widths, depths = (128, 256, 512, 1024), (3, 3, 5, 2)
    stages = tuple(
        StageSpec(d, w, "resnet", i > 0, dict(
            down_channels=None if i == 0 else widths[i - 1], down_kernel_size=3, expand=True, expand_channels=2 * w,
            linear_expand=True, transition_b=True, block_kwargs=dict(bottle_ratio=0.5)))
        for i, (d, w) in enumerate(zip(depths, widths)))
    return BackboneSpec(stages=stages, stem_channels=64, num_classes=num_classes, act="leaky_relu_0.01",
                        stem_type="resnet")


def csp_resnext50_32x4d_spec(num_classes: int = 1000) -> BackboneSpec:
    """CSPResNeXt-50 32x4d, layer-for-layer timm ``cspresnext50``: 20,569,896 parameters at 1000 classes.

    Like :func:`csp_resnet50_spec` with widths 256/512/1024/2048, expand = stage width (linear), ResNeXt blocks
    of 32 groups with hidden = block width, and grouped (32) down convs.
    """
    widths, depths = (256, 512, 1024, 2048), (3, 3, 5, 2)
    stages = tuple(
        StageSpec(d, w, "resnext", i > 0, dict(
            down_channels=None if i == 0 else widths[i - 1], down_kernel_size=3, down_groups=32, expand=True,
            expand_channels=w, linear_expand=True, transition_b=True, block_kwargs=dict(bottle_ratio=1.0, groups=32)))
        for i, (d, w) in enumerate(zip(depths, widths)))
    return BackboneSpec(stages=stages, stem_channels=64, num_classes=num_classes, act="leaky_relu_0.01",
                        stem_type="resnet")


def csp_darknet53_spec(num_classes: int = 1000) -> BackboneSpec:
    """CSPDarknet-53 (CSPNet paper / YOLOv4 backbone), layer-for-layer timm ``cspdarknet53``: 27,642,184
    parameters at 1000 classes.

    Stem 3x3/1 conv to 32 channels; five stages of (1, 2, 8, 8, 4) Darknet blocks, widths 64..1024, strides
    2..32; every stage has a 3x3/2 down conv to its width; the first stage expands to 2x width with
    hidden = block width / 2, later stages expand to 1x width with hidden = block width.
    """
    widths, depths = (64, 128, 256, 512, 1024), (1, 2, 8, 8, 4)
    stages = tuple(
        StageSpec(d, w, "darknet", True, dict(
            expand=True, expand_channels=2 * w if i == 0 else w, transition_b=True,
            block_kwargs=dict(bottle_ratio=0.5 if i == 0 else 1.0)))
        for i, (d, w) in enumerate(zip(depths, widths)))
    return BackboneSpec(stages=stages, stem_channels=32, num_classes=num_classes, act="leaky_relu_0.01",
                        pre_kernel_size=3, stem_type="darknet")


#: YOLOX model sizes: name -> (depth multiplier, width multiplier, depthwise).
CSPDARKNET_SIZES: dict[str, tuple[float, float, bool]] = {
    "nano": (0.33, 0.25, True),
    "tiny": (0.33, 0.375, False),
    "s": (0.33, 0.50, False),
    "m": (0.67, 0.75, False),
    "l": (1.0, 1.0, False),
    "x": (1.33, 1.25, False),
}


def cspdarknet_spec(depth: float, width: float, depthwise: bool = False, act: str = "silu",
                    out_indices: Sequence[int] = (2, 3, 4), features_only: bool = True,
                    num_classes: int | None = None) -> BackboneSpec:
    """YOLOX ``CSPDarknet(depth, width)`` as data (see :func:`cspdarknet`)."""
    if depth <= 0 or width <= 0:
        raise ValueError(f"depth and width must be > 0, got depth={depth}, width={width}")
    base = int(64 * width)
    n = max(round(3 * depth), 1)
    widths, depths = [2 * base, 4 * base, 8 * base, 16 * base], [n, 3 * n, 3 * n, n]
    stages = tuple(
        StageSpec(d, w, "darknet", True, dict(
            depthwise_down=depthwise, spp=i == 3, expand=True, expand_channels=2 * int(w * 0.5), blocks_first=True,
            block_kwargs=dict(bottle_ratio=1.0, shortcut=i < 3, depthwise=depthwise)))
        for i, (d, w) in enumerate(zip(depths, widths)))
    return BackboneSpec(
        stages=stages, stem_channels=base, norm="yolox_bn", act=act, pre_kernel_size=3, stem_type="focus",
        out_indices=tuple(out_indices), features_only=features_only,
        num_classes=(0 if features_only else 1000) if num_classes is None else num_classes,
        weight_init="torch",  # YOLOX keeps PyTorch's default conv init
    )


def csp_resnet50(num_classes: int = 1000, **kwargs: Any) -> CSPNet:
    """The timm ``cspresnet50`` network (:func:`csp_resnet50_spec`); ``kwargs`` override CSPNet arguments."""
    return CSPNet.from_spec(csp_resnet50_spec(num_classes), **kwargs)


def csp_resnext50_32x4d(num_classes: int = 1000, **kwargs: Any) -> CSPNet:
    """The timm ``cspresnext50`` network (:func:`csp_resnext50_32x4d_spec`); ``kwargs`` override CSPNet arguments."""
    return CSPNet.from_spec(csp_resnext50_32x4d_spec(num_classes), **kwargs)


def csp_darknet53(num_classes: int = 1000, **kwargs: Any) -> CSPNet:
    """The timm ``cspdarknet53`` network (:func:`csp_darknet53_spec`); ``kwargs`` override CSPNet arguments."""
    return CSPNet.from_spec(csp_darknet53_spec(num_classes), **kwargs)


def cspdarknet(depth: float, width: float, depthwise: bool = False, act: type[nn.Module] = nn.SiLU,
               out_indices: Sequence[int] = (2, 3, 4), **kwargs: Any) -> CSPNet:
    """YOLOX ``CSPDarknet(depth, width)`` as a :class:`CSPNet` feature extractor (YOLOX-exact layout).

    base = ``int(64 * width)``, n = ``max(round(3 * depth), 1)``. Focus stem (3x3) to base channels; stages
    ``stages.0..3`` = YOLOX ``dark2..dark5``: a 3x3/2 down conv (a DWConv when ``depthwise``) to
    2/4/8/16 x base channels, then a YOLOX CSP layer (CSPStage with ``blocks_first=True``) of n, 3n,
    3n, n DarknetBottleneck (``bottle_ratio=1.0``, residual except in the last stage, depthwise 3x3
    when ``depthwise``); the last stage has an SPP (5/9/13) between its down conv and its CSP layer. All BN use
    eps 1e-3, momentum 0.03 (YoloxBatchNorm2d). Initialisation is YOLOX's too: PyTorch's layer
    defaults (``weight_init="torch"``; pass ``weight_init="timm"`` for timm's kaiming / zero-init-last scheme).

    Returns a ``features_only`` CSPNet: ``model(x)`` -> list of feature maps for ``out_indices`` (default
    ``(2, 3, 4)`` = dark3, dark4, dark5 at strides 8, 16, 32 with 4/8/16 x base channels, also in
    ``model.out_channels`` / ``model.out_strides``). Pass ``features_only=False, num_classes=...`` for a
    classifier. Parameter counts (feature extractor): s 4,212,672; nano 459,968; l 27,075,968.

    YOLOX checkpoint key correspondence (``backbone.backbone.`` prefix in YOLOX detectors):
    ``stem.conv`` <- ``stem.conv``; ``stages.{k}.down`` <- ``dark{k+2}.0``; ``stages.3.spp`` <- ``dark5.1``;
    CSP layer ``dark{k+2}.1`` (``dark5.2``): ``expand`` <- cat(``conv1``, ``conv2``) on dim 0,
    ``blocks.{i}`` <- ``m.{i}``, ``fuse`` <- ``conv3``.
    """
    features_only = kwargs.pop("features_only", True)
    spec = cspdarknet_spec(depth, width, depthwise, "silu", out_indices, features_only, kwargs.pop("num_classes", None))
    return CSPNet.from_spec(spec, act=act, **kwargs)  # ``act`` as given: any factory, named only when saved
