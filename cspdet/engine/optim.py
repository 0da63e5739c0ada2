"""Optimizers and learning-rate schedules.

Parameters are split into three groups, as in YOLOX: normalisation weights and all biases get no weight
decay (decaying a BN scale or a bias towards zero only fights the normalisation), every other weight does.

The schedules are pure functions of the iteration number, so resuming only needs the iteration: there is
no hidden scheduler state that could drift. :class:`YoloxSchedule` and :class:`CosineSchedule` are small
frozen records whose ``state_dict`` lets a resumed run check that it still follows the same curve.

A detection run picks its schedule by name (``train.schedule``) from :data:`SCHEDULES`; ``yolox_cosine`` (the
default) is YOLOX's. A new schedule is one function registered with :func:`register_schedule`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import nn

from ..config import ConfigError

__all__ = [
    "AUTO_SGD_ITERATIONS",
    "CosineSchedule",
    "LRSchedule",
    "OptimizerChoice",
    "SCHEDULES",
    "ScheduleRequest",
    "resolve_optimizer",
    "YoloxSchedule",
    "build_optimizer",
    "build_schedule",
    "register_schedule",
    "cosine_lr",
    "param_groups",
    "scaled_schedule_epochs",
    "check_schedule",
    "set_lr",
    "with_scaled_schedule",
    "yolox_lr",
]

# Normalisation layers whose affine weight must not be decayed.
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into YOLOX's three groups.

    Returns:
        ``[norm weights (wd 0), other weights (wd weight_decay), biases (wd 0)]`` as optimizer param-group
        dicts, each with a ``"name"`` entry ("norm", "weight", "bias"). Empty groups are kept so the group
        order (and therefore a saved optimizer state) never depends on the model.
    """
    norm_w: list[nn.Parameter] = []
    weights: list[nn.Parameter] = []
    biases: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:  # shared parameters are optimised once
                continue
            seen.add(id(p))
            if pname == "bias":
                biases.append(p)
            elif isinstance(module, _NORM_TYPES):
                norm_w.append(p)
            else:
                weights.append(p)
    return [
        {"params": norm_w, "weight_decay": 0.0, "name": "norm"},
        {"params": weights, "weight_decay": weight_decay, "name": "weight"},
        {"params": biases, "weight_decay": 0.0, "name": "bias"},
    ]


def build_optimizer(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = True,
) -> torch.optim.Optimizer:
    """SGD (with optional Nesterov momentum) or AdamW over :func:`param_groups`.

    For AdamW, ``momentum`` is used as beta1 (0.9 by default, AdamW's usual value).
    """
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise ValueError(f"optimizer {name!r}: expected 'sgd' or 'adamw'")


#: ``optimizer: auto`` picks SGD above this many optimizer steps, AdamW below (Ultralytics' threshold).
AUTO_SGD_ITERATIONS = 10_000


@dataclass(frozen=True)
class OptimizerChoice:
    """What ``train.optimizer`` resolves to for one run: the optimizer, its base lr, and why (for the run header)."""

    name: str
    base_lr: float
    reason: str


def resolve_optimizer(name: str, *, num_images: int, batch_size: int, accumulate: int, epochs: int,
                      num_classes: int, lr_per_image: float) -> OptimizerChoice:
    """Resolve ``train.optimizer`` (``sgd`` / ``adamw`` / ``auto``) to an optimizer and base lr.

    ``sgd`` / ``adamw``: base lr = ``lr_per_image`` x the batch per optimizer step (YOLOX's linear scaling).
    ``auto``: long schedules (more than :data:`AUTO_SGD_ITERATIONS` optimizer steps) train with SGD at that lr;
    short ones -- the common case of a few hundred images for tens of epochs -- with AdamW at a class-count-aware
    lr ``0.002 * 5 / (4 + C)`` (Ultralytics' fit; Adam's step size does not scale with the batch), which learns
    far faster than SGD in a few hundred steps.
    """
    step_batch = batch_size * accumulate
    if name != "auto":
        return OptimizerChoice(name, lr_per_image * step_batch, f"{name} lr {lr_per_image:g} x {step_batch} images")
    steps = math.ceil(num_images / step_batch) * epochs
    if steps > AUTO_SGD_ITERATIONS:
        return OptimizerChoice("sgd", lr_per_image * step_batch,
                               f"auto -> sgd ({steps} optimizer steps > {AUTO_SGD_ITERATIONS})")
    lr = round(0.002 * 5 / (4 + num_classes), 6)
    return OptimizerChoice("adamw", lr, f"auto -> adamw lr {lr:g} for {num_classes} classes ({steps} optimizer steps "
                                        f"<= {AUTO_SGD_ITERATIONS})")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the same learning rate on every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def yolox_lr(
    iteration: int | float,
    *,
    base_lr: float,
    total_iters: int,
    warmup_iters: int | float,
    no_aug_iters: int,
    warmup_lr: float = 0.0,
    min_lr_ratio: float = 0.05,
) -> float:
    """YOLOX's "warm cos" learning rate at ``iteration`` (0-based count of iterations done so far).

    - ``iteration <= warmup_iters``: quadratic ramp ``warmup_lr + (base_lr - warmup_lr) * (it / warmup_iters)**2``;
    - the last ``no_aug_iters`` iterations: flat at ``min_lr = base_lr * min_lr_ratio``;
    - in between: cosine from ``base_lr`` down to ``min_lr``.
    """
    min_lr = base_lr * min_lr_ratio
    if warmup_iters > 0 and iteration <= warmup_iters:
        return (base_lr - warmup_lr) * (iteration / warmup_iters) ** 2 + warmup_lr
    if iteration >= total_iters - no_aug_iters:
        return min_lr
    span = total_iters - warmup_iters - no_aug_iters
    if span <= 0:
        return min_lr
    progress = (iteration - warmup_iters) / span
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def cosine_lr(
    iteration: int | float,
    *,
    base_lr: float,
    total_iters: int,
    warmup_iters: int | float = 0,
    warmup_lr: float = 0.0,
    min_lr: float = 0.0,
) -> float:
    """Classification schedule: linear warm-up from ``warmup_lr`` to ``base_lr``, then cosine to ``min_lr``."""
    if warmup_iters > 0 and iteration < warmup_iters:
        return warmup_lr + (base_lr - warmup_lr) * iteration / warmup_iters
    span = max(total_iters - warmup_iters, 1)
    progress = min(max((iteration - warmup_iters) / span, 0.0), 1.0)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


# Warm-up and no-augmentation tail left unset (None) scale with the run: a tenth of it each, at most YOLOX's
# numbers. YOLOX trains 300 epochs with 5 warm-up and 15 no-aug epochs (both reached here at 300: 300 / 10 =
# 30 -> 5, 15); Ultralytics closes mosaic for the last 10 of its default 100 epochs (here 100 -> 10 no-aug).
# A 2-epoch run thus warms up for 0.2 epochs and keeps its augmentation, instead of a warm-up that never ends
# inside a run that is all no-aug tail; warm-up + tail never exceed a fifth of the run.
AUTO_SCHEDULE_DIVISOR = 10
AUTO_WARMUP_MAX = 5.0
AUTO_NO_AUG_MAX = 15


def scaled_schedule_epochs(epochs: int, warmup_epochs: float | None = None,
                           no_aug_epochs: int | None = None) -> tuple[float, int]:
    """``(warm-up epochs, no-aug epochs)`` of a detection run: the given values, or for None a tenth of the
    run (the no-aug tail rounded down to whole epochs), at most 5 and 15 epochs (YOLOX's numbers at 300)."""
    warmup = min(AUTO_WARMUP_MAX, epochs / AUTO_SCHEDULE_DIVISOR) if warmup_epochs is None else warmup_epochs
    no_aug = min(AUTO_NO_AUG_MAX, epochs // AUTO_SCHEDULE_DIVISOR) if no_aug_epochs is None else no_aug_epochs
    return float(warmup), int(no_aug)


#: ``train.schedule`` of a config that does not set it (and of checkpoints written before the key existed).
DEFAULT_SCHEDULE = "yolox_cosine"


def with_scaled_schedule(raw: dict[str, Any]) -> dict[str, Any]:
    """A config dict with ``train.warmup_epochs`` / ``no_aug_epochs`` / ``schedule`` as the run uses them, so a
    resume compares what was trained (5 written out, or None scaled to 5, are the same schedule)."""
    train = dict(raw.get("train") or {})
    if "epochs" in train:
        train["warmup_epochs"], train["no_aug_epochs"] = scaled_schedule_epochs(
            train["epochs"], train.get("warmup_epochs"), train.get("no_aug_epochs"))
        train.setdefault("schedule", DEFAULT_SCHEDULE)  # a run saved before train.schedule existed trained with it
    return {**raw, "train": train}


@dataclass(frozen=True)
class YoloxSchedule:
    """:func:`yolox_lr` bound to one run's numbers; ``schedule(it)`` is the lr for iteration ``it``."""

    base_lr: float
    total_iters: int
    warmup_iters: float
    no_aug_iters: int
    warmup_lr: float = 0.0
    min_lr_ratio: float = 0.05

    def __call__(self, iteration: int | float) -> float:
        return yolox_lr(iteration, **dataclasses.asdict(self))

    def state_dict(self) -> dict[str, Any]:
        return {"type": "yolox", **dataclasses.asdict(self)}


@dataclass(frozen=True)
class CosineSchedule:
    """:func:`cosine_lr` bound to one run's numbers."""

    base_lr: float
    total_iters: int
    warmup_iters: float = 0
    warmup_lr: float = 0.0
    min_lr: float = 0.0

    def __call__(self, iteration: int | float) -> float:
        return cosine_lr(iteration, **dataclasses.asdict(self))

    def state_dict(self) -> dict[str, Any]:
        return {"type": "cosine", **dataclasses.asdict(self)}


# ------------------------------------------------------------------------------------------ named schedules


class LRSchedule(Protocol):
    """What a training run needs of a schedule: the lr of an iteration (a pure function of it, for exact resume)
    and a ``state_dict`` (plain data; a resumed run logs a change of it)."""

    def __call__(self, iteration: int | float) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ScheduleRequest:
    """A detection run's numbers that a named schedule is built from (``train.*`` as the run resolved them)."""

    base_lr: float
    epochs: int
    iters_per_epoch: int
    warmup_epochs: float
    """After :func:`scaled_schedule_epochs`."""
    no_aug_epochs: int
    """The final epochs without mosaic / mixup (after :func:`scaled_schedule_epochs`)."""
    warmup_lr: float = 0.0
    min_lr_ratio: float = 0.05


ScheduleBuilder = Callable[[ScheduleRequest], LRSchedule]

#: ``train.schedule`` name -> builder; :func:`register_schedule` adds one.
SCHEDULES: dict[str, ScheduleBuilder] = {}


def register_schedule(name: str) -> Callable[[ScheduleBuilder], ScheduleBuilder]:
    """Decorator registering a schedule builder under ``name`` (what ``train.schedule`` selects); a name that
    is taken raises ``ValueError``."""

    def add(builder: ScheduleBuilder) -> ScheduleBuilder:
        if name in SCHEDULES:
            raise ValueError(f"schedule {name!r} is already registered")
        SCHEDULES[name] = builder
        return builder

    return add


def check_schedule(name: str) -> None:
    """Raise :class:`~cspdet.config.ConfigError` naming ``train.schedule`` and the choices if ``name`` is unknown."""
    if name not in SCHEDULES:
        raise ConfigError(f"train.schedule: unknown schedule {name!r} (expected one of {', '.join(SCHEDULES)})")


def build_schedule(name: str, request: ScheduleRequest) -> LRSchedule:
    """The schedule ``train.schedule`` names, for one run (see :func:`check_schedule` for an unknown name)."""
    check_schedule(name)
    return SCHEDULES[name](request)


@register_schedule("yolox_cosine")
def yolox_cosine(req: ScheduleRequest) -> YoloxSchedule:
    """YOLOX's: quadratic warm-up, cosine to ``min_lr_ratio`` of the base lr, constant in the no-aug tail."""
    return YoloxSchedule(
        base_lr=req.base_lr,
        total_iters=req.epochs * req.iters_per_epoch,
        warmup_iters=req.warmup_epochs * req.iters_per_epoch,
        no_aug_iters=min(req.no_aug_epochs, req.epochs) * req.iters_per_epoch,
        warmup_lr=req.warmup_lr,
        min_lr_ratio=req.min_lr_ratio,
    )
