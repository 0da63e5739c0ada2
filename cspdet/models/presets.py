"""The model zoo as data: preset names -> specs, and the factories that build from them.

A registry entry is either a finished spec (:class:`~cspdet.models.spec.DetectorSpec` /
:class:`~cspdet.models.spec.BackboneSpec`) or a :class:`Preset`: a *family* (a registered function that turns
a few numbers into a spec, e.g. YOLOX's depth / width multipliers) plus its parameters. Adding a network is one
call::

    from cspdet.models import Preset, register_detector, create_detector
    register_detector("cspdarknet_s_relu", Preset("yolox", dict(depth=0.33, width=0.5, act="relu")))
    model = create_detector("cspdarknet_s_relu", num_classes=3)

``create_detector(name, num_classes, **overrides)`` looks the name up, applies the overrides (family parameters
such as ``depth``, ``width``, ``act``; ``None`` keeps the preset's value) and builds the modules from the
resulting spec. The built detector carries its spec (``model.spec``) and metadata (``model.meta``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from torch import nn

from .backbones import (
    CSPDARKNET_SIZES,
    csp_darknet53_spec,
    csp_resnet50_spec,
    csp_resnext50_32x4d_spec,
    cspdarknet_spec,
)
from .cspnet import CSPNet
from .detector import Detector
from .elan_backbone import C2fNet  # noqa: F401  (registers the c2fnet backbone kind and the C2f / C3k2 stages)
from .elan_pan import C2fPAN  # noqa: F401  (registers the c2fpan neck)
from .registry import ACTIVATIONS, BLOCKS, NORMS, Registry, SpecError
from .spec import BackboneSpec, DetectorSpec, HeadSpec, NeckSpec, StageSpec, plain_data
from .tal_head import TaskAlignedHead  # noqa: F401  (registers the tal head)
from .yolo11_layout import YOLO11_SIZES, yolo11_spec, yolo26_spec
from .yolov8_layout import YOLOV8_SIZES, yolov8_channels, yolov8_spec

__all__ = [
    "BACKBONES", "DETECTORS", "FAMILIES", "Preset", "classifier_spec", "create_classifier", "create_detector",
    "detector_spec", "register_activation", "register_backbone", "register_block", "register_detector",
    "register_family", "register_norm",
]


@dataclass(frozen=True)
class Preset:
    """A family function (registered in :data:`FAMILIES`) and the parameters that make one network of it."""

    family: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", plain_data(dict(self.params), f"Preset({self.family!r}).params"))


Entry = Union[Preset, DetectorSpec, BackboneSpec]
#: family name -> ``f(num_classes, **params) -> DetectorSpec | BackboneSpec``.
FAMILIES: Registry[Callable[..., Any]] = Registry("family")
#: detector preset name -> :class:`Preset` or :class:`DetectorSpec` (``create_detector``).
DETECTORS: Registry[Entry] = Registry("detector")
#: backbone / classifier preset name -> :class:`Preset` or :class:`BackboneSpec` (``create_classifier``).
BACKBONES: Registry[Entry] = Registry("backbone")


def register_family(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a family function ``fn(num_classes, **params) -> spec``; usable as a decorator factory's target."""
    return FAMILIES.register(name, fn)


def register_detector(name: str, entry: Entry, *, overwrite: bool = False) -> Entry:
    """Make ``create_detector(name)`` build ``entry`` (a :class:`Preset` or a :class:`DetectorSpec`)."""
    if not isinstance(entry, (Preset, DetectorSpec)):
        raise SpecError(f"register_detector({name!r}): expected a Preset or a DetectorSpec, got {type(entry).__name__}")
    return DETECTORS.register(name, entry, overwrite=overwrite)


def register_backbone(name: str, entry: Entry, *, overwrite: bool = False) -> Entry:
    """Make ``create_classifier(name)`` build ``entry`` (a :class:`Preset` or a :class:`BackboneSpec`)."""
    if not isinstance(entry, (Preset, BackboneSpec)):
        raise SpecError(f"register_backbone({name!r}): expected a Preset or a BackboneSpec, got {type(entry).__name__}")
    return BACKBONES.register(name, entry, overwrite=overwrite)


def register_block(name: str, block: Callable[..., nn.Module], *, overwrite: bool = False) -> Callable[..., nn.Module]:
    """Name a block class for specs (``StageSpec.block``); see :mod:`cspdet.models.blocks` for the contract."""
    return BLOCKS.register(name, block, overwrite=overwrite)


def register_activation(name: str, act: Callable[[], nn.Module], *, overwrite: bool = False):
    """Name an activation factory for specs (``act="name"``)."""
    return ACTIVATIONS.register(name, act, overwrite=overwrite)


def register_norm(name: str, norm: Callable[[int], nn.Module], *, overwrite: bool = False):
    """Name a norm layer factory for specs (``norm="name"``)."""
    return NORMS.register(name, norm, overwrite=overwrite)


# ---------------------------------------------------------------------------------------------- lookups


def _act_name(act: Any) -> Any:
    return act if act is None or isinstance(act, str) else ACTIVATIONS.name_of(act)


def _resolve(registry: Registry[Entry], name: str, num_classes: int, overrides: dict[str, Any]) -> Any:
    if not isinstance(name, str) or name not in registry:
        raise SpecError(f"unknown {registry.kind} {name!r}; choose one of {', '.join(registry)}")
    entry = registry.get(name)
    overrides = {k: _act_name(v) if k == "act" else v for k, v in overrides.items() if v is not None}
    if isinstance(entry, Preset):
        family = FAMILIES.get(entry.family)
        allowed = [p for p in inspect.signature(family).parameters if p != "num_classes"]
        unknown = sorted(set(overrides) - set(allowed))
        if unknown:
            hint = ("; stage_defs / stem_channels define a custom backbone: use name 'custom'"
                    if {"stage_defs", "stem_channels"} & set(unknown) else "")
            raise SpecError(f"{registry.kind} {name!r}: unknown option(s) {', '.join(unknown)} (family "
                            f"{entry.family!r} takes {', '.join(allowed)}){hint}")
        try:
            return family(num_classes=num_classes, **{**entry.params, **overrides})
        except TypeError as err:  # a required family parameter is missing (e.g. stage_defs of 'custom')
            raise SpecError(f"{registry.kind} {name!r}: {err}") from None
    if isinstance(entry, DetectorSpec):
        head_keys = {"prior_prob"}
        unknown = sorted(set(overrides) - head_keys)
        if unknown:
            raise SpecError(f"detector {name!r} is a fixed spec: only num_classes and prior_prob can be overridden, "
                            f"not {', '.join(unknown)}")
        return entry.replace(head=entry.head.replace(num_classes=num_classes, **overrides))
    return entry.replace(num_classes=num_classes, **overrides)  # a BackboneSpec: any of its fields


def detector_spec(name: str, num_classes: int = 80, **overrides: Any) -> DetectorSpec:
    """The :class:`DetectorSpec` of preset ``name`` with ``num_classes`` classes and ``overrides`` applied."""
    return _resolve(DETECTORS, name, num_classes, overrides)


def create_detector(name: str, num_classes: int = 80, **overrides: Any) -> Detector:
    """Build a detector by preset name (see :data:`DETECTORS`; ``cspdet.models.DETECTORS.names()``).

    Presets, by family (``cspdet.models.FAMILIES``; each scales with depth / width multipliers):

    * ``cspdarknet_{nano,tiny,s,m,l,x}`` (family ``yolox``): YOLOX-{Nano,Tiny,S,M,L,X} exactly (same layers and
      parameter counts, loadable with :func:`cspdet.models.load_yolox_weights`); nano is depthwise. YOLOX's
      formulas: the CSP-PAN neck uses ``max(round(3 * depth), 1)`` blocks per CSP stage, neck channels
      ``int(256/512/1024 * width)``, head width ``int(256 * width)``; decoupled head with objectness, SimOTA.
      Initialised as YOLOX's ``get_model`` does: PyTorch's default conv init, BN eps 1e-3 / momentum 0.03,
      cls/obj biases from ``prior_prob``.
    * ``cspresnet50`` / ``cspdarknet53`` (family ``csp_backbone``): the timm-exact CSPResNet-50 / CSPDarknet-53 as
      backbone (features at strides 8/16/32, 256/512/1024 channels), with a YOLOX-L sized neck and head by default
      (depth = width = 1). ``act`` / ``depth`` / ``width`` change only the neck and head; the backbone keeps
      timm's layout and init.
    * ``custom``: a CSPNet backbone from ``stem_channels`` (default 32) and ``stage_defs`` (``[num_blocks,
      out_channels, block, downsample]`` with ``block`` a registered block name such as ``resnet`` /
      ``resnext`` / ``darknet``, or a block class), whose last three stages have strides 8, 16, 32, under the
      YOLOX neck and head.
    * ``yolov8{n,s,m,l,x}_layout`` (family ``yolov8``), ``yolo11{n,s,m,l,x}_layout`` (``yolo11``),
      ``yolo26{n,s,m,l,x}_layout`` (``yolo26``): those networks' layouts with their published parameter counts -- C2f / C3k2 backbone with
      SPPF (and C2PSA attention), the matching PAN, and the task-aligned head (DFL; YOLO26: direct box
      regression and the NMS-free one-to-one branch). Family parameters ``depth``, ``width``,
      ``max_channels``, ``reg_max``, ``one2one``, ``act``, ``prior_prob``, ``head_options``.
    * ``csptal_{n,s,m,l,x}``: YOLOv8's layout plus the NMS-free one-to-one branch (dual assignment); NMS-free
      inference by default. ``cspresnet50_tal`` (family ``csp_tal``): timm's CSPResNet-50 under the C2f PAN and
      that head.

    Args:
        name: preset name.
        num_classes: number of classes C.
        overrides: the family's parameters (above): ``depth``, ``width``, ``act`` (a name such as ``silu`` /
            ``relu`` / ``leaky_relu``, or an activation class), ``prior_prob``; ``depthwise`` for the YOLOX-headed
            families, ``stem_channels`` / ``stage_defs`` for ``custom``, ``one2one`` / ``reg_max`` / ... for the
            task-aligned ones. ``None`` keeps the preset's value; a parameter the family does not take is an
            error naming the family's parameters.

    Raises:
        SpecError (a ValueError): unknown name or option, or a network that cannot be built.
    """
    model = Detector.from_spec(detector_spec(name, num_classes, **overrides))
    model.meta.preset = name
    return model


def classifier_spec(name: str, num_classes: int = 1000, **overrides: Any) -> BackboneSpec:
    """The :class:`BackboneSpec` of backbone preset ``name`` as a classifier with ``num_classes`` outputs."""
    return _resolve(BACKBONES, name, num_classes, overrides)


def create_classifier(name: str, num_classes: int = 1000, **overrides: Any) -> CSPNet:
    """Build a CSPNet classifier by preset name (see :data:`BACKBONES`). Each name builds exactly the backbone
    that the detector preset of the same family uses, plus a pooling + linear head, so a pretrained classifier
    initialises that detector's backbone."""
    return CSPNet.from_spec(classifier_spec(name, num_classes, **overrides))


# -------------------------------------------------------------------------------------------- families


def _rows_to_stages(stage_defs: Sequence[Sequence[Any]]) -> tuple[StageSpec, ...]:
    if not stage_defs:
        raise SpecError("stage_defs: needs at least one [num_blocks, out_channels, block, downsample] row")
    stages = []
    for i, row in enumerate(stage_defs):
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise SpecError(f"stage_defs[{i}] must be [num_blocks, out_channels, block, downsample], got {row!r}")
        n, c, block, down = row
        try:
            name = block if isinstance(block, str) else BLOCKS.name_of(block)
            BLOCKS.get(name)
        except SpecError as err:
            raise SpecError(f"stage_defs[{i}]: {err}") from None
        stages.append(StageSpec(n, c, name, bool(down)))
    return tuple(stages)


def _yolox_neck_head(backbone: BackboneSpec, num_classes: int, neck_channels: Sequence[int], depth: float,
                     depthwise: bool, act: str, prior_prob: float, hidden_channels: int) -> DetectorSpec:
    """YOLOX's CSP-PAN neck (``max(round(3 * depth), 1)`` blocks per stage) and decoupled head on ``backbone``."""
    if backbone.out_strides != [8, 16, 32]:
        raise SpecError(f"backbone feature strides are {backbone.out_strides}, need [8, 16, 32] (the last three "
                        "stages of the backbone must end at strides 8, 16 and 32)")
    neck = NeckSpec("csppan", tuple(neck_channels), max(round(3 * depth), 1), bool(depthwise), "yolox_bn", act)
    head = HeadSpec("yolox", num_classes, hidden_channels, tuple(backbone.out_strides), bool(depthwise), "yolox_bn",
                    act, prior_prob)
    return DetectorSpec(backbone, neck, head)


def _check_multipliers(depth: float, width: float) -> None:
    if not depth > 0 or not width > 0:
        raise SpecError(f"depth and width must be > 0, got depth={depth}, width={width}")


def yolox_family(num_classes: int, depth: float, width: float, depthwise: bool = False, act: str = "silu",
                 prior_prob: float = 0.01) -> DetectorSpec:
    """YOLOX: CSPDarknet(depth, width) -> CSP-PAN of widths ``int(256/512/1024 * width)`` -> decoupled head of
    width ``int(256 * width)`` (YOLOX's formulas, so every YOLOX size is reproduced exactly)."""
    _check_multipliers(depth, width)
    backbone = cspdarknet_spec(depth, width, depthwise, act)
    return _yolox_neck_head(backbone, num_classes, [int(c * width) for c in (256, 512, 1024)], depth, depthwise,
                            act, prior_prob, int(256 * width))


def csp_backbone_family(num_classes: int, backbone: str, depth: float = 1.0, width: float = 1.0,
                        depthwise: bool = False, act: str = "silu", prior_prob: float = 0.01) -> DetectorSpec:
    """A registered CSPNet backbone (:data:`BACKBONES`, e.g. timm's ``csp_resnet50``) under a YOLOX neck and head
    whose widths are the backbone's feature widths x ``width``; ``act`` changes only the neck and head."""
    _check_multipliers(depth, width)
    spec = classifier_spec(backbone, 0).replace(features_only=True)
    neck_channels = [int(c * width) for c in spec.out_channels]
    return _yolox_neck_head(spec, num_classes, neck_channels, depth, depthwise, act, prior_prob, neck_channels[0])


def custom_family(num_classes: int, stage_defs: Sequence[Sequence[Any]], stem_channels: int = 32,
                  depth: float = 0.33, width: float = 1.0, depthwise: bool = False, act: str = "silu",
                  prior_prob: float = 0.01) -> DetectorSpec:
    """A CSPNet backbone from ``stage_defs`` rows (YOLOX BN, 3x3 pre-convs, timm init) under a YOLOX neck and
    head whose widths are the backbone's feature widths x ``width``."""
    _check_multipliers(depth, width)
    backbone = custom_backbone_family(0, stage_defs, stem_channels, act).replace(features_only=True)
    neck_channels = [int(c * width) for c in backbone.out_channels]
    return _yolox_neck_head(backbone, num_classes, neck_channels, depth, depthwise, act, prior_prob,
                            neck_channels[0])


def cspdarknet_backbone_family(num_classes: int, depth: float, width: float, depthwise: bool = False,
                               act: str = "silu") -> BackboneSpec:
    """YOLOX's CSPDarknet as a classifier (the backbone of the ``cspdarknet_*`` detectors plus a linear head)."""
    _check_multipliers(depth, width)
    return cspdarknet_spec(depth, width, depthwise, act, features_only=False, num_classes=num_classes)


def custom_backbone_family(num_classes: int, stage_defs: Sequence[Sequence[Any]], stem_channels: int = 32,
                           act: str = "silu") -> BackboneSpec:
    """A CSPNet from ``stage_defs`` rows ``[num_blocks, out_channels, block, downsample]``: YOLOX BN, 3x3
    pre-convs (the same backbone the ``custom`` detector builds)."""
    return BackboneSpec(stages=_rows_to_stages(stage_defs), stem_channels=stem_channels, norm="yolox_bn", act=act,
                        pre_kernel_size=3, num_classes=num_classes)


def yolov8_family(num_classes: int, depth: float, width: float, max_channels: int = 1024, reg_max: int = 16,
                  one2one: bool = False, act: str = "silu", prior_prob: float | None = None,
                  head_options: dict[str, Any] | None = None) -> DetectorSpec:
    """YOLOv8's layout (C2f backbone + SPPF -> C2f PAN -> task-aligned head with DFL); ``one2one`` adds the NMS-free
    one-to-one branch (see :func:`cspdet.models.yolov8_spec`)."""
    return yolov8_spec(num_classes, depth, width, max_channels, reg_max, one2one, act, prior_prob, head_options)


def yolo11_family(num_classes: int, depth: float, width: float, max_channels: int = 1024, reg_max: int = 16,
                  one2one: bool = False, act: str = "silu", prior_prob: float | None = None,
                  head_options: dict[str, Any] | None = None) -> DetectorSpec:
    """YOLO11's layout (C3k2 backbone + SPPF + C2PSA -> C3k2 PAN -> task-aligned head with DFL and the light class
    branch; see :func:`cspdet.models.yolo11_spec`)."""
    return yolo11_spec(num_classes, depth, width, max_channels, reg_max, one2one, act, prior_prob, head_options)


def yolo26_family(num_classes: int, depth: float, width: float, max_channels: int = 1024, reg_max: int = 1,
                  one2one: bool = True, act: str = "silu", prior_prob: float | None = None,
                  head_options: dict[str, Any] | None = None) -> DetectorSpec:
    """YOLO26's layout (YOLO11's with an attention block in the last neck stage, SPPF with shortcut, direct box
    regression and the NMS-free one-to-one branch; see :func:`cspdet.models.yolo26_spec`)."""
    return yolo26_spec(num_classes, depth, width, max_channels, reg_max, one2one, act, prior_prob, head_options)


def csp_tal_family(num_classes: int, backbone: str, depth: float = 0.33, width: float = 0.25,
                   max_channels: int = 1024, reg_max: int = 16, one2one: bool = False, act: str = "silu",
                   prior_prob: float | None = None, head_options: dict[str, Any] | None = None) -> DetectorSpec:
    """A registered CSPNet backbone (:data:`BACKBONES`, e.g. timm's ``csp_resnet50``) under the C2f PAN neck and the
    task-aligned head, neck widths as YOLOv8's at ``width`` (``depth`` scales the neck's blocks)."""
    _check_multipliers(depth, width)
    bb = classifier_spec(backbone, 0).replace(features_only=True)
    if bb.out_strides != [8, 16, 32]:
        raise SpecError(f"backbone {backbone!r} has feature strides {bb.out_strides}, need [8, 16, 32]")
    tal = yolov8_spec(num_classes, depth, width, max_channels, reg_max, one2one, act, prior_prob, head_options)
    return DetectorSpec(bb, tal.neck.replace(out_channels=tuple(yolov8_channels(width, max_channels)[2:])), tal.head)


FAMILIES.register("yolox", yolox_family)
FAMILIES.register("yolov8", yolov8_family)
FAMILIES.register("yolo11", yolo11_family)
FAMILIES.register("yolo26", yolo26_family)
FAMILIES.register("csp_tal", csp_tal_family)
FAMILIES.register("csp_backbone", csp_backbone_family)
FAMILIES.register("custom", custom_family)
FAMILIES.register("cspdarknet_backbone", cspdarknet_backbone_family)
FAMILIES.register("custom_backbone", custom_backbone_family)

for _name, _spec_fn in (("csp_resnet50", csp_resnet50_spec), ("csp_resnext50_32x4d", csp_resnext50_32x4d_spec),
                        ("csp_darknet53", csp_darknet53_spec)):
    BACKBONES.register(_name, _spec_fn())
# timm's spelling of the same networks
BACKBONES.register("cspresnet50", BACKBONES.get("csp_resnet50"))
BACKBONES.register("cspresnext50", BACKBONES.get("csp_resnext50_32x4d"))
BACKBONES.register("cspdarknet53", BACKBONES.get("csp_darknet53"))
for _size, (_depth, _width, _dw) in CSPDARKNET_SIZES.items():
    BACKBONES.register(f"cspdarknet_{_size}", Preset("cspdarknet_backbone", dict(depth=_depth, width=_width,
                                                                                depthwise=_dw)))
    DETECTORS.register(f"cspdarknet_{_size}", Preset("yolox", dict(depth=_depth, width=_width, depthwise=_dw)))
BACKBONES.register("custom", Preset("custom_backbone"))
DETECTORS.register("cspresnet50", Preset("csp_backbone", dict(backbone="csp_resnet50")))
DETECTORS.register("cspdarknet53", Preset("csp_backbone", dict(backbone="csp_darknet53")))
DETECTORS.register("custom", Preset("custom"))
# YOLOv8's layout with its published parameter counts (n 3,157,200 / s 11,166,560 / m 25,902,640 / l 43,691,520 /
# x 68,229,648 at 80 classes), so the same network can be trained in cspdet and elsewhere (and Ultralytics weights
# converted, cspdet.models.ultralytics_weights); and cspdet's task-aligned family at the same scales with the
# NMS-free one-to-one branch (dual assignment; NMS-free inference by default, NMS on the one-to-many branch on demand).
for _size in ("n", "s", "m", "l", "x"):
    _d, _w, _mc = YOLOV8_SIZES[_size]
    DETECTORS.register(f"yolov8{_size}_layout", Preset("yolov8", dict(depth=_d, width=_w, max_channels=_mc)))
    DETECTORS.register(f"csptal_{_size}", Preset("yolov8", dict(depth=_d, width=_w, max_channels=_mc, one2one=True)))
DETECTORS.register("cspresnet50_tal", Preset("csp_tal", dict(backbone="csp_resnet50", depth=0.33, width=0.5,
                                                            one2one=True)))
# YOLO11's and YOLO26's layouts with their published parameter counts (YOLO11 n 2,624,080 / s 9,458,752 /
# m 20,114,688 / l 25,372,160 / x 56,966,176; YOLO26 n 2,572,280 / s 10,009,784 / m 21,896,248 / l 26,299,704 /
# x 58,993,368 at 80 classes): lighter networks (YOLO26n: 5.5 GFLOPs at 640 for the branch that runs, against 8.7 of
# YOLOv8n / csptal_n) for CPU deployment.
for _size in ("n", "s", "m", "l", "x"):
    _d, _w, _mc = YOLO11_SIZES[_size]
    DETECTORS.register(f"yolo11{_size}_layout", Preset("yolo11", dict(depth=_d, width=_w, max_channels=_mc)))
    DETECTORS.register(f"yolo26{_size}_layout", Preset("yolo26", dict(depth=_d, width=_w, max_channels=_mc)))
