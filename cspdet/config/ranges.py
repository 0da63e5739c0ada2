"""Declared ranges of every numeric config field, and argparse ``type=`` checks built from the same ranges.

Every numeric field has a range in :data:`FIELD_RANGES` or is declared free in :data:`FREE_FIELDS` (with the
reason); :func:`cspdet.config.validate_config` checks them all, and :func:`range_type` turns a field's range into
the check of a command-line tool's numeric option, so a setting means the same in a file and on a command line.
"""


from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import typing
from dataclasses import dataclass
from typing import Any, Callable


from .schema import Config, DataConfig, EvalConfig, ModelConfig, PretrainConfig, RunOptions, TrainConfig

__all__ = ["FIELD_RANGES", "FREE_FIELDS", "Range", "field_range", "range_type"]


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
IMAGE_SIDE = Range(32, 8192)  # and a multiple of 32, checked in validate_config; 8192: the largest side a checkpoint
# may record (cspdet.models.spec), past which one letterboxed image alone is gigabytes
# Training needs at least two cells at stride 32: a 1x1 map leaves BatchNorm one value per channel when the last batch
# holds a single image, and training stops in the middle of an epoch (found by the fuzz test, tests/data)
TRAIN_IMAGE_SIDE = Range(64, 8192)
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
        "img_size": TRAIN_IMAGE_SIDE,
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
        "threads": AT_LEAST_ONE,
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
        "patience": NON_NEGATIVE,  # 0 = off
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
    ModelConfig: {"stage_defs": "nested [num_blocks, channels, block, downsample] lists, checked by the model builder",
                  "head_options": "the head's constructor arguments, checked (names and ranges) by the head; or keyed "
                                  "by head kind ({tal: {...}}): options for whichever head the model has"},
    TrainConfig: {"freeze": "a count or module names: >= 0 checked by validate_config, the rest against the model "
                            "by cspdet.engine.freeze"},
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


