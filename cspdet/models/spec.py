"""Model specs: frozen, serialisable descriptions of a network, and the metadata a detector carries.

A spec holds data only -- numbers, strings, tuples and dicts of those; classes are named through the
registries of :mod:`cspdet.models.registry` (``block="resnet"``, ``act="silu"``, ``kind="yolox"``). So a spec
travels inside a checkpoint (``spec.to_dict()``; read back with ``DetectorSpec.from_dict``) and rebuilds the
same modules on any machine::

    DetectorSpec
      backbone: BackboneSpec   stem + CSP stages (StageSpec: num_blocks, out_channels, block, downsample, options)
      neck:     NeckSpec       kind "csppan" + widths
      head:     HeadSpec       kind "yolox" + num_classes, widths, strides, options

:class:`DetectorMeta` is what a trained detector knows beyond its layers: class names, dataset category ids,
input size, channel order and pixel scaling, strides and default thresholds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .registry import SpecError

__all__ = ["BackboneSpec", "DetectorMeta", "DetectorSpec", "HeadSpec", "NeckSpec", "StageSpec", "plain_data"]

# Total stride of each CSPNet stem type (see cspnet._build_stem).
STEM_STRIDES = {"conv": 2, "resnet": 4, "darknet": 1, "focus": 2}


def plain_data(value: Any, where: str) -> Any:
    """``value`` as JSON-like data (tuples become lists); raises SpecError naming ``where`` for anything else
    (a class, a function, a tensor): a spec must not hold code."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(f"{where}: {value} is not a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [plain_data(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SpecError(f"{where}: keys must be strings, got {k!r}")
            out[k] = plain_data(v, f"{where}.{k}")
        return out
    raise SpecError(f"{where}: {value!r} ({type(value).__name__}) is not plain data; a spec names classes through "
                    "the registries (cspdet.models.BLOCKS / NORMS / ACTIVATIONS) instead of holding them")


class _Spec:
    """Shared ``to_dict`` / ``from_dict`` / ``replace`` of the spec dataclasses."""

    # field name -> spec class of a nested field (tuple fields of specs are listed in _SPEC_TUPLES)
    _NESTED: dict[str, type] = {}
    _SPEC_TUPLES: dict[str, type] = {}

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists instead of tuples), ready for ``torch.save`` / JSON / YAML."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, _Spec):
                out[f.name] = v.to_dict()
            elif f.name in self._SPEC_TUPLES:
                out[f.name] = [s.to_dict() for s in v]
            else:
                out[f.name] = plain_data(v, f"{type(self).__name__}.{f.name}")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "spec"):
        """Rebuild a spec from :meth:`to_dict` output. Unknown or missing keys raise SpecError naming them."""
        if not isinstance(data, Mapping):
            raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)} (valid: {', '.join(names)})")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in cls._NESTED:
                value = cls._NESTED[key].from_dict(value, f"{where}.{key}")
            elif key in cls._SPEC_TUPLES:
                if not isinstance(value, (list, tuple)):
                    raise SpecError(f"{where}.{key}: expected a list, got {type(value).__name__}")
                value = tuple(cls._SPEC_TUPLES[key].from_dict(v, f"{where}.{key}[{i}]") for i, v in enumerate(value))
            kwargs[key] = value
        try:
            return cls(**kwargs)
        except (TypeError, ValueError, OverflowError) as err:  # missing fields; values __post_init__ refuses
            raise SpecError(f"{where}: {err}") from None

    def replace(self, **changes: Any):
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _freeze(obj: Any, *names: str) -> None:
    # Frozen dataclasses: normalise list inputs (e.g. from JSON) into tuples so equal specs compare equal.
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, list):
            object.__setattr__(obj, name, _tuple(value))


@dataclass(frozen=True)
class StageSpec(_Spec):
    """One CSP stage of a :class:`BackboneSpec` -- the data form of a ``stage_defs`` row.

    Attributes:
        num_blocks, out_channels, downsample: as in ``CSPNet(stage_defs=[(num_blocks, out_channels, block_fn,
            downsample)])``.
        block: registered block name (``resnet``, ``resnext``, ``darknet``, ...) or ``"module:QualName"``.
        options: extra :class:`~cspdet.models.CSPStage` keyword arguments (``expand``, ``spp``,
            ``block_kwargs``, ...), plain data; ``norm`` / ``act`` given here are registry names.
    """

    num_blocks: int
    out_channels: int
    block: str = "darknet"
    downsample: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", plain_data(dict(self.options), "StageSpec.options"))

    @property
    def stride(self) -> int:
        return int(self.options.get("stride", 2 if self.downsample else 1))


@dataclass(frozen=True)
class BackboneSpec(_Spec):
    """A backbone as data. ``kind="cspnet"`` is a :class:`~cspdet.models.CSPNet` (its constructor arguments, see
    ``CSPNet`` for each field); other kinds are registered in ``BACKBONE_KINDS`` and read the fields they share
    (stages, stem width, norm, act, out_indices) plus their ``options``.

    ``features_only=True`` makes a multi-scale feature extractor (a detector backbone), else a classifier with
    ``num_classes`` outputs.
    """

    stages: tuple[StageSpec, ...]
    kind: str = "cspnet"
    in_channels: int = 3
    stem_channels: int = 64
    stem_type: str = "conv"
    norm: str = "bn"
    act: str = "relu"
    split_ratio: float = 0.5
    pre_kernel_size: int = 1
    num_classes: int = 1000
    global_pool: str = "avg"
    dropout: float = 0.0
    feature_channels: int | None = None
    features_only: bool = False
    out_indices: tuple[int, ...] | None = None
    weight_init: str = "timm"
    options: Mapping[str, Any] = field(default_factory=dict)
    """Kind-specific extras (``c2fnet``: ``stage``, ``sppf``, ``sppf_kernel``, ``sppf_options``, ``psa_blocks``);
    plain data."""

    _SPEC_TUPLES = {"stages": StageSpec}

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        _freeze(self, "out_indices")
        object.__setattr__(self, "options", plain_data(dict(self.options), "BackboneSpec.options"))
        if self.stem_type not in STEM_STRIDES:
            raise SpecError(f"BackboneSpec.stem_type: {self.stem_type!r} is not one of {', '.join(STEM_STRIDES)}")

    def feature_info(self) -> list[tuple[int, int]]:
        """``(channels, stride)`` of the stem output and of every stage output (CSPNet's ``feature_info``),
        computed from the data alone."""
        stride = STEM_STRIDES[self.stem_type]
        info = [(self.stem_channels, stride)]
        for stage in self.stages:
            stride *= stage.stride
            info.append((stage.out_channels, stride))
        return info

    def resolved_out_indices(self) -> tuple[int, ...]:
        n = len(self.stages) + 1
        return tuple(self.out_indices) if self.out_indices is not None else tuple(range(max(0, n - 3), n))

    @property
    def out_channels(self) -> list[int]:
        info = self.feature_info()
        return [info[i][0] for i in self.resolved_out_indices()]

    @property
    def out_strides(self) -> list[int]:
        info = self.feature_info()
        return [info[i][1] for i in self.resolved_out_indices()]


@dataclass(frozen=True)
class NeckSpec(_Spec):
    """The neck between backbone and head. Its kind is a registered neck class, built as
    ``NECKS.get(kind)(in_channels, out_channels, num_blocks=..., depthwise=..., norm=..., act=..., **options)``
    with ``in_channels`` the backbone's feature channels.

    Attributes:
        out_channels: channels of each output level (None = the input channels).
    """

    kind: str = "csppan"
    out_channels: tuple[int, ...] | None = None
    num_blocks: int = 1
    depthwise: bool = False
    norm: str = "yolox_bn"
    act: str | None = "silu"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _freeze(self, "out_channels")
        object.__setattr__(self, "options", plain_data(dict(self.options), "NeckSpec.options"))


@dataclass(frozen=True)
class HeadSpec(_Spec):
    """The detection head. Its kind is a registered head class (:data:`~cspdet.models.HEADS`), built as
    ``HEADS.get(kind).from_spec(spec, in_channels)`` with ``in_channels`` the neck's output channels: each family
    reads the common fields it uses and its own constructor arguments from ``options`` (see
    :mod:`cspdet.models.contracts`). The head owns its loss, assigner, decoding and schedule.
    """

    kind: str = "yolox"
    num_classes: int = 80
    hidden_channels: int | None = 256
    strides: tuple[int, ...] = (8, 16, 32)
    depthwise: bool = False
    norm: str = "yolox_bn"
    act: str | None = "silu"
    prior_prob: float | None = 0.01
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _freeze(self, "strides")
        object.__setattr__(self, "options", plain_data(dict(self.options), "HeadSpec.options"))
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise SpecError(f"HeadSpec.num_classes: must be an integer >= 1, got {self.num_classes!r}")


@dataclass(frozen=True)
class DetectorSpec(_Spec):
    """A whole detector: backbone -> neck -> head (see the module docstring)."""

    backbone: BackboneSpec
    neck: NeckSpec
    head: HeadSpec

    _NESTED = {"backbone": BackboneSpec, "neck": NeckSpec, "head": HeadSpec}

    @property
    def num_classes(self) -> int:
        return self.head.num_classes


@dataclass
class DetectorMeta:
    """What a detector knows beyond its layers (``Weights.meta`` in torchvision's terms); saved in checkpoints
    and exported files so that nothing else is needed to use the model.

    Attributes:
        class_names: one name per class, in the model's contiguous class order 0..C-1.
        category_ids: dataset category id of each class (e.g. COCO's 1..90), when known.
        img_size: (H, W) input size for inference and evaluation (multiples of the largest stride).
        train_img_size: (H, W) the model was trained at, when known.
        channel_order: "RGB": cspdet models take RGB input.
        pixel_range: input values are raw pixel values in this range (floats, no mean/std normalisation).
        strides: strides of the prediction levels.
        conf, iou, max_det: default score threshold, NMS IoU and detections per image for prediction.
        preset: the registry name the model was created from, when it was.
        source: where the weights come from: ``{path, format, sha256, licence, parent?, trained_in?}``
            (:mod:`cspdet.engine.provenance`); converted third-party weights record file, format, version and
            licence (the weights keep their source's licence); older checkpoints hold a plain string.
        dataset: the dataset descriptor the model was trained on, when known (``cspdet val WEIGHTS`` scores on
            its validation split unless told otherwise), as the training command named it.
        dataset_path: that descriptor's absolute location when the model was saved (found from any folder).
    """

    class_names: list[str]
    category_ids: list[int] | None = None
    img_size: tuple[int, int] = (640, 640)
    train_img_size: tuple[int, int] | None = None
    channel_order: str = "RGB"
    pixel_range: tuple[float, float] = (0.0, 255.0)
    strides: tuple[int, ...] = (8, 16, 32)
    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 300
    preset: str | None = None
    source: str | dict[str, Any] | None = None
    dataset: str | None = None
    dataset_path: str | None = None

    def __post_init__(self) -> None:
        self.class_names = [str(n) for n in self.class_names]
        if self.category_ids is not None:
            self.category_ids = [int(c) for c in self.category_ids]
            if len(self.category_ids) != len(self.class_names):
                raise SpecError(f"DetectorMeta: {len(self.class_names)} class names but {len(self.category_ids)} "
                                "category ids")
        self.img_size = _hw(self.img_size, "DetectorMeta.img_size")
        self.train_img_size = None if self.train_img_size is None else _hw(self.train_img_size,
                                                                           "DetectorMeta.train_img_size")
        self.pixel_range = (float(self.pixel_range[0]), float(self.pixel_range[1]))
        self.strides = tuple(int(s) for s in self.strides)

    @classmethod
    def default(cls, num_classes: int, strides: Sequence[int] = (8, 16, 32), **kwargs: Any) -> DetectorMeta:
        """Placeholder class names ``"0".."C-1"`` for a model no dataset has named yet."""
        return cls(class_names=[str(i) for i in range(num_classes)], strides=tuple(strides), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return plain_data(dataclasses.asdict(self), "DetectorMeta")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "meta") -> DetectorMeta:
        if not isinstance(data, Mapping):
            raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except (TypeError, ValueError, OverflowError) as err:  # OverflowError: int(inf) of a damaged file
            raise SpecError(f"{where}: {err}") from None


MAX_IMG_SIDE = 8192  # far above any detector's input; a larger one in a file is damage (it would be allocated)


def _hw(size: Any, where: str) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_IMG_SIDE for v in hw):
        raise SpecError(f"{where}: expected an int or (height, width) of ints in 1..{MAX_IMG_SIDE}, got {size!r:.60}")
    return int(hw[0]), int(hw[1])
