"""Typed configuration: YAML files mapped onto dataclasses.

A config file is YAML with up to four sections (``model``, ``data``, ``train``, ``eval``) and an optional
``_base_`` key naming another config (path relative to the file) whose values it overrides. Command-line
overrides look like ``train.epochs=10`` or ``data.img_size=[320,320]`` and are parsed as YAML scalars, then
converted to the field's declared type.

Every problem is a :class:`ConfigError` with a one-line message that names the key, the file and, for an
unknown key, the nearest valid key::

    model.widht: unknown key in configs/x.yaml; did you mean model.width?
    data.mosaic_prob: value 5.0 out of range [0, 1] in configs/x.yaml

Every numeric field has a declared range (:data:`FIELD_RANGES`, beside the dataclasses) or is declared free
(:data:`FREE_FIELDS`, with the reason); :func:`validate_config` checks them all, and :func:`range_type` turns
the same ranges into argparse ``type=`` checks for the command-line tools' numeric options.

This module imports nothing else of cspdet so that every layer can depend on it (``save_config`` alone
imports the stdlib-only :mod:`cspdet.fileio`, when called, for its atomic write).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Union

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "FIELD_RANGES",
    "FREE_FIELDS",
    "ModelConfig",
    "PretrainConfig",
    "Range",
    "RunOptions",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "field_range",
    "load_config",
    "parse_override",
    "range_type",
    "save_config",
    "validate_config",
]


class ConfigError(ValueError):
    """A configuration problem; ``str(err)`` is a complete one-line message for the user."""


@dataclass
class ModelConfig:
    """Which detector to build (``cspdet.models.create_detector``) and how to initialise it."""

    name: str = "cspdarknet_s"
    """Preset name: cspdarknet_{nano,tiny,s,m,l,x}, cspresnet50, cspdarknet53, or ``custom``."""
    num_classes: int = 80
    depth: float | None = None
    """Override of the preset's depth multiplier (YOLOX convention)."""
    width: float | None = None
    """Override of the preset's width multiplier (YOLOX convention)."""
    depthwise: bool | None = None
    act: str | None = None
    """Activation override: silu, relu, leaky_relu."""
    stem_channels: int | None = None
    """Stem width for ``name: custom``."""
    stage_defs: list[list[Any]] | None = None
    """For ``name: custom``: ``[[num_blocks, out_channels, block_name, downsample], ...]`` with block names
    ``resnet``, ``resnext``, ``darknet``."""
    weights: str | None = None
    """Initial weights: a cspdet checkpoint (detector or classifier backbone), a timm or a YOLOX state dict."""
    weights_format: Literal["auto", "cspdet", "timm", "yolox"] = "auto"


@dataclass
class DataConfig:
    """Dataset, input size and augmentation (YOLOX defaults)."""

    dataset: str = "datasets/coco.yaml"
    """Dataset descriptor YAML (see datasets/README.md), relative to the working directory."""
    img_size: list[int] = field(default_factory=lambda: [640, 640])
    """Training input (height, width)."""
    workers: int = 4
    cache: bool = False
    """Keep decoded images in RAM (keyed by path, size and mtime, so it never goes stale)."""
    strict: bool = False
    """Raise on the first bad image or annotation instead of skipping it with a warning."""
    max_labels: int = 120
    mosaic_prob: float = 1.0
    mosaic_scale: list[float] = field(default_factory=lambda: [0.1, 2.0])
    mixup_prob: float = 1.0
    mixup_scale: list[float] = field(default_factory=lambda: [0.5, 1.5])
    degrees: float = 10.0
    translate: float = 0.1
    shear: float = 2.0
    hsv_prob: float = 1.0
    hsv_gains: list[float] = field(default_factory=lambda: [5.0, 30.0, 30.0])
    """Max hue (0..180 scale), saturation and value shifts; each applied with p=0.5."""
    flip_prob: float = 0.5
    mosaic_pool: int = 64
    """Mosaic/MixUp partners come from blocks of about this many consecutive samples of the epoch's shuffled
    order, so each image is decoded about once per epoch; 0 = partners from the whole dataset, as YOLOX."""
    min_box_size: float = 2.0
    """After each geometric step, drop boxes whose width or height is <= this many pixels."""
    min_area_ratio: float = 0.1
    """Drop boxes with less than this fraction of their uncropped area left."""
    max_aspect_ratio: float = 20.0
    """Drop boxes with max(w/h, h/w) >= this."""
    multiscale_range: int = 0
    """Random input sizes in ``img_size +- 32 * multiscale_range`` (0 = fixed size)."""


@dataclass
class RunOptions:
    """Settings every training run has, detection (``train``) and classification pretraining (``pretrain``)."""

    amp: bool = True
    """Mixed precision on CUDA (ignored on CPU)."""
    bf16: bool = False
    """bfloat16 autocast on CPU."""
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    """auto, cpu, cuda, cuda:N."""
    exist_ok: bool = False
    """Start a new run in ``output_dir/name`` even if it holds an earlier run (whose outputs are replaced),
    instead of numbering a fresh directory (``name2``, ``name3``, ...)."""


@dataclass
class TrainConfig(RunOptions):
    """Optimisation schedule and run bookkeeping (YOLOX recipe by default)."""

    epochs: int = 300
    batch_size: int = 64
    """Global batch size (split across processes under torchrun)."""
    nominal_batch_size: int | None = None
    """Accumulate gradients until this many images per step (None = no accumulation)."""
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr_per_image: float = 0.01 / 64
    """Base learning rate = lr_per_image x batch size (YOLOX: 0.01 at batch 64)."""
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 5.0
    warmup_lr: float = 0.0
    min_lr_ratio: float = 0.05
    no_aug_epochs: int = 15
    """Final epochs without mosaic/mixup, with the L1 loss switched on, at the minimum lr."""
    ema: bool = True
    ema_decay: float = 0.9998
    sync_bn: bool = False
    eval_interval: int = 10
    """Evaluate every N epochs (and after the last); 0 = only after the last."""
    save_interval: int = 1
    output_dir: str = "runs/train"
    name: str = "exp"
    log_images: int = 4
    """Validation images with predicted boxes logged to TensorBoard at each evaluation."""


@dataclass
class EvalConfig:
    """Evaluation and inference settings (YOLOX: conf 0.01 / nms 0.65 for COCO eval)."""

    img_size: list[int] = field(default_factory=lambda: [640, 640])
    batch_size: int = 8
    conf: float = 0.001
    iou: float = 0.65
    max_det: int = 300
    split: str = "val"
    backend: Literal["pycocotools", "faster_coco_eval"] = "pycocotools"


@dataclass
class PretrainConfig(RunOptions):
    """Classification pretraining of a CSPNet backbone on an ImageFolder dataset."""

    model: str = "csp_resnet50"
    """A CSPNet preset (csp_resnet50, csp_resnext50_32x4d, csp_darknet53, cspdarknet_s, ...) or ``custom``."""
    stem_channels: int | None = None
    stage_defs: list[list[Any]] | None = None
    data: str = "datasets/imagenet"
    """ImageFolder root with train/<class>/*.jpg and val/<class>/*.jpg."""
    img_size: int = 224
    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.1
    optimizer: Literal["sgd", "adamw"] = "sgd"
    weight_decay: float = 1e-4
    warmup_epochs: float = 5.0
    label_smoothing: float = 0.1
    ema: bool = False
    ema_decay: float = 0.9998
    workers: int = 4
    act: str | None = None
    """Activation override (silu, relu, leaky_relu); must match the detector that will load the backbone."""
    depth: float | None = None
    """Depth multiplier override for ``cspdarknet_*`` (as ``model.depth`` of the detector)."""
    width: float | None = None
    """Width multiplier override for ``cspdarknet_*`` (as ``model.width`` of the detector)."""
    momentum: float = 0.9
    """SGD momentum (Nesterov), or AdamW's beta1."""
    min_lr_ratio: float = 0.0
    """The cosine ends at ``lr * min_lr_ratio``."""
    warmup_lr: float = 0.0
    eval_interval: int = 1
    output_dir: str = "runs/pretrain"
    name: str = "exp"


@dataclass
class Config:
    """A whole run: the sections of one YAML file (after ``_base_`` merging and overrides)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


# ---------------------------------------------------------------------------------------------- ranges


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: ``[lo, hi]``, with either end open; an infinite end is always
    open (``inf`` itself is never a valid setting), and NaN is never inside."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: Any) -> bool:
        if not isinstance(value, numbers.Real) or isinstance(value, bool):  # numbers.Real: also NumPy scalars
            return False
        above = value > self.lo if self.lo_open or self.lo == -math.inf else value >= self.lo
        below = value < self.hi if self.hi_open or self.hi == math.inf else value <= self.hi
        return above and below

    def __str__(self) -> str:
        left = "(" if self.lo_open or self.lo == -math.inf else "["
        right = ")" if self.hi_open or self.hi == math.inf else "]"
        return f"{left}{_num(self.lo)}, {_num(self.hi)}{right}"


def _num(v: float) -> str:
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return str(int(v)) if float(v).is_integer() else repr(v)


PROBABILITY = Range(0, 1)
FRACTION = Range(0, 1)
DECAY = Range(0, 1, hi_open=True)  # a per-step multiplicative factor: 1 would never move
POSITIVE = Range(0, lo_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
IMAGE_SIDE = Range(32)  # and a multiple of 32, checked in validate_config
SEED = Range(0, 2**32 - 1)

# The range of every numeric field, by the dataclass that declares it (subclasses inherit, e.g. RunOptions ->
# train and pretrain). For a list field: one Range for every element, or a tuple with one Range per position
# (the list must then have exactly that many elements). Fields that are numeric but have no range are in
# FREE_FIELDS with the reason; tests/test_config.py fails for a numeric field that is in neither.
FIELD_RANGES: dict[type, dict[str, Range | tuple[Range, ...]]] = {
    ModelConfig: {
        "num_classes": AT_LEAST_ONE,
        "depth": POSITIVE,
        "width": POSITIVE,
        "stem_channels": AT_LEAST_ONE,
    },
    DataConfig: {
        "img_size": IMAGE_SIDE,
        "workers": NON_NEGATIVE,
        "max_labels": AT_LEAST_ONE,
        "mosaic_prob": PROBABILITY,
        "mosaic_scale": (POSITIVE, POSITIVE),
        "mixup_prob": PROBABILITY,
        "mixup_scale": (POSITIVE, POSITIVE),
        "degrees": Range(0, 180),
        "translate": FRACTION,
        "shear": Range(0, 90, hi_open=True),  # degrees; tan(90) is infinite
        "hsv_prob": PROBABILITY,
        "hsv_gains": (Range(0, 180), Range(0, 255), Range(0, 255)),  # hue on OpenCV's 0..180 scale
        "flip_prob": PROBABILITY,
        "mosaic_pool": NON_NEGATIVE,
        "min_box_size": NON_NEGATIVE,
        "min_area_ratio": FRACTION,
        "max_aspect_ratio": Range(1, lo_open=True),  # max(w/h, h/w) >= 1: a limit of 1 or less drops every box
        "multiscale_range": NON_NEGATIVE,
    },
    RunOptions: {
        "grad_clip": NON_NEGATIVE,  # 0 = no clipping
        "seed": SEED,
    },
    TrainConfig: {
        "epochs": AT_LEAST_ONE,
        "batch_size": AT_LEAST_ONE,
        "nominal_batch_size": AT_LEAST_ONE,
        "lr_per_image": POSITIVE,
        "momentum": DECAY,
        "weight_decay": DECAY,
        "warmup_epochs": NON_NEGATIVE,
        "warmup_lr": NON_NEGATIVE,
        "min_lr_ratio": FRACTION,
        "no_aug_epochs": NON_NEGATIVE,
        "ema_decay": DECAY,
        "eval_interval": NON_NEGATIVE,
        "save_interval": AT_LEAST_ONE,
        "log_images": NON_NEGATIVE,
    },
    EvalConfig: {
        "img_size": IMAGE_SIDE,
        "batch_size": AT_LEAST_ONE,
        "conf": PROBABILITY,
        "iou": PROBABILITY,
        "max_det": AT_LEAST_ONE,
    },
    PretrainConfig: {
        "stem_channels": AT_LEAST_ONE,
        "img_size": IMAGE_SIDE,
        "epochs": AT_LEAST_ONE,
        "batch_size": AT_LEAST_ONE,
        "lr": POSITIVE,
        "weight_decay": DECAY,
        "warmup_epochs": NON_NEGATIVE,
        "label_smoothing": DECAY,  # 1 would make every target uniform
        "ema_decay": DECAY,
        "workers": NON_NEGATIVE,
        "depth": POSITIVE,
        "width": POSITIVE,
        "momentum": DECAY,
        "min_lr_ratio": FRACTION,
        "warmup_lr": NON_NEGATIVE,
        "eval_interval": NON_NEGATIVE,
    },
}

# Numeric fields deliberately without a range, and why.
FREE_FIELDS: dict[type, dict[str, str]] = {
    ModelConfig: {"stage_defs": "nested [num_blocks, channels, block, downsample] lists, checked by the model builder"},
    PretrainConfig: {"stage_defs": "nested [num_blocks, channels, block, downsample] lists, checked by the model builder"},
}


def _declared(cls: type, name: str, table: dict[type, dict[str, Any]]) -> Any:
    for klass in cls.__mro__:
        if name in table.get(klass, {}):
            return table[klass][name]
    return None


def field_range(dotted: str) -> Range | tuple[Range, ...] | None:
    """The declared range of config field ``"section.key"`` (``None`` when it has none)."""
    section, _, key = dotted.partition(".")
    cls = typing.get_type_hints(Config).get(section)
    if cls is None or key not in {f.name for f in dataclasses.fields(cls)}:
        raise KeyError(f"{dotted}: not a config field")
    return _declared(cls, key, FIELD_RANGES)


def range_type(spec: str | Range, kind: type | None = None) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses a number and checks it against a range.

    Args:
        spec: a config field (``"eval.conf"``: its declared range, per element for a list field) or a
            :class:`Range`.
        kind: ``int`` or ``float`` (default: the config field's type, else ``float``).

    The error reads like the config's: ``argument --conf: value 2.0 out of range [0, 1]``.
    """
    if isinstance(spec, str):
        rng = field_range(spec)
        if isinstance(rng, tuple):
            raise ValueError(f"{spec}: has one range per position; give a Range")
        if rng is None:
            raise ValueError(f"{spec}: has no declared range")
        if kind is None:
            section, _, key = spec.partition(".")
            hint = typing.get_type_hints(typing.get_type_hints(Config)[section])[key]
            kind = int if int in _numeric_leaves(hint) else float
    else:
        rng = spec
    kind = kind or float

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value not in rng:
            raise argparse.ArgumentTypeError(f"value {value!r} out of range {rng}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def _numeric_leaves(tp: Any) -> set[Any]:
    """The numeric types (int, float, Any) inside annotation ``tp`` (bool excluded)."""
    if tp in (int, float, Any):
        return {tp}
    return {leaf for arg in typing.get_args(tp) for leaf in _numeric_leaves(arg)}


# --------------------------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read ``path`` (following ``_base_``), apply ``section.key=value`` overrides, validate.

    ``path=None`` gives the defaults (plus overrides).
    """
    raw: dict[str, Any] = {}
    source = "in <defaults>"
    merged_sources: dict[str, str] = {}
    if path is not None:
        raw, merged_sources = _read_with_bases(Path(path), chain=())
        source = f"in {path}"
    for text in overrides:
        dotted, value = parse_override(text)
        _set_dotted(raw, dotted, value)
        merged_sources[dotted] = "on the command line"
        merged_sources.setdefault(dotted.partition(".")[0], "on the command line")
    return config_from_dict(raw, source=source, key_sources=merged_sources)


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=10"`` -> ``("train.epochs", 10)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key or "." not in key:
        raise ConfigError(f"override {text!r}: expected section.key=value (e.g. train.epochs=10)")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({_first_line(err)})") from None
    return key, value


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({_first_line(err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merged data of ``path`` and its ``_base_`` chain, and which file each ``section.key`` came from."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"{path}: _base_ cycle: {cycle}")
    own = _read_yaml(path)
    base = own.pop("_base_", None)
    data, sources = own, {}
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: _base_ must be a file path, got {type(base).__name__}")
        base_data, sources = _read_with_bases(path.parent / base, chain + (resolved,))
        data = _deep_merge(base_data, own)
    _record_sources(own, str(path), sources)
    return data, sources


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Values of ``top`` win; nested mappings merge key by key (lists are replaced whole)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _record_sources(raw: dict[str, Any], source: str, sources: dict[str, str]) -> None:
    for section, values in raw.items():
        if isinstance(values, dict):
            for key in values:
                sources[f"{section}.{key}"] = f"in {source}"
        sources[section] = f"in {source}"


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    section, _, key = dotted.partition(".")
    if "." in key:
        raise ConfigError(f"{dotted}: overrides take exactly section.key (nested keys are not supported)")
    raw.setdefault(section, {})
    if not isinstance(raw[section], dict):
        raise ConfigError(f"{section}: expected a mapping of keys, got {type(raw[section]).__name__}")
    raw[section][key] = value


# ------------------------------------------------------------------------------------------ validation


def config_from_dict(
    raw: dict[str, Any], source: str = "in <dict>", key_sources: dict[str, str] | None = None
) -> Config:
    """Build a validated :class:`Config` from plain data (as read from YAML or a checkpoint)."""
    key_sources = key_sources or {}
    sections = {f.name: f for f in dataclasses.fields(Config)}
    kwargs: dict[str, Any] = {}
    for section, values in raw.items():
        where = key_sources.get(str(section), source)
        if section not in sections:
            raise ConfigError(f"{section}: unknown section {where}{_suggest(str(section), sections)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a mapping of keys {where}, got {type(values).__name__}")
        cls = typing.get_type_hints(Config)[section]
        kwargs[section] = _build_section(cls, section, values, source, key_sources)
    cfg = Config(**kwargs)
    validate_config(cfg, source, key_sources)
    return cfg


def validate_config(cfg: Config, source: str = "in <config>", key_sources: dict[str, str] | None = None) -> None:
    """Check every field of ``cfg`` against its declared range (:data:`FIELD_RANGES`) and the checks that
    span fields; raises :class:`ConfigError` with a one-line message naming the key and where it was set."""
    key_sources = key_sources or {}
    for section in dataclasses.fields(Config):
        part = getattr(cfg, section.name)
        for f in dataclasses.fields(part):
            rng = _declared(type(part), f.name, FIELD_RANGES)
            value = getattr(part, f.name)
            if rng is None or value is None:
                continue
            dotted = f"{section.name}.{f.name}"
            where = key_sources.get(dotted, source)
            if not isinstance(value, (list, tuple)):
                if value not in rng:
                    raise ConfigError(f"{dotted}: value {value!r} out of range {rng} {where}")
                continue
            if isinstance(rng, tuple) and len(value) != len(rng):
                raise ConfigError(f"{dotted}: expected {len(rng)} numbers {where}, got {list(value)!r}")
            for i, v in enumerate(value):
                r = rng[i] if isinstance(rng, tuple) else rng
                if v not in r:
                    raise ConfigError(f"{dotted}[{i}]: value {v!r} out of range {r} {where}")
    for dotted in ("data.img_size", "eval.img_size"):
        section, _, key = dotted.partition(".")
        size = getattr(getattr(cfg, section), key)
        if any(v % 32 for v in size):
            raise ConfigError(f"{dotted}: sides must be multiples of 32 (the largest stride) "
                              f"{key_sources.get(dotted, source)}, got {size}")
    if 32 * cfg.data.multiscale_range >= min(cfg.data.img_size):
        raise ConfigError(f"data.multiscale_range: {cfg.data.multiscale_range} x 32 px must stay below the smaller "
                          f"side of data.img_size {cfg.data.img_size} {key_sources.get('data.multiscale_range', source)}")


def _build_section(cls: type, section: str, values: dict[str, Any], source: str, key_sources: dict[str, str]):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        dotted = f"{section}.{key}"
        where = key_sources.get(dotted, source)
        if key not in hints:
            candidates = {f"{section}.{n}": n for n in names}
            raise ConfigError(f"{dotted}: unknown key {where}{_suggest(dotted, candidates)}")
        is_size = key == "img_size" and typing.get_origin(hints[key]) is list
        if is_size and isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]  # a single number means a square input: img_size=320 -> [320, 320]
        kwargs[key] = _convert(value, hints[key], dotted, where)
        if is_size and len(kwargs[key]) != 2:
            raise ConfigError(f"{dotted}: expected [height, width] or one number {where}, got {value!r}")
    return cls(**kwargs)


def _suggest(name: str, candidates: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(arg)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, dotted: str, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; allow the harmless conversions (int -> float)."""
    try:
        return _coerce(value, tp)
    except (TypeError, ValueError):
        got = f"{value!r} ({type(value).__name__})"
        raise ConfigError(f"{dotted}: expected {_type_name(tp)} {where}, got {got}") from None


def _coerce(value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError):
                continue
        raise TypeError
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ValueError
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return [_coerce(v, arg) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split())


# ------------------------------------------------------------------------------------------- writing


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON/checkpoint friendly) of a config."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML so a run can be reproduced with ``load_config(path)``.

    The write is atomic (:func:`cspdet.fileio.atomic_write`); a full disk or read-only directory raises
    :class:`cspdet.fileio.OutputError` with the previous file intact.
    """
    from .fileio import atomic_write  # stdlib-only; imported here so this module's imports stay cspdet-free

    return atomic_write(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
