"""``train.freeze``: keep the first part of a fine-tuned detector fixed.

Frozen modules get ``requires_grad=False`` on their parameters (the optimizer never sees them:
:func:`cspdet.engine.optim.param_groups` skips them) and stay in eval mode through the trainer's
``model.train()`` calls (:func:`keep_frozen_in_eval`), so their BatchNorm layers normalise with the loaded
running statistics and never update them: a frozen module computes exactly what it computed in the source
model. (Freezing only ``requires_grad`` would leave BN statistics drifting towards the new data's, which
changes the frozen features under the layers that are trained.)

What ``train.freeze`` names:

* an int N: the first N modules of the backbone in forward order -- ``backbone.stem``, ``backbone.stages.0``,
  ``backbone.stages.1``, ... then the backbone's modules after its stages (``sppf``, ``psa`` of the YOLOv8 /
  YOLO11 / YOLO26 layouts); N = all of them freezes the whole backbone. 0 freezes nothing.
* a module path (``backbone``, ``neck``, ``backbone.stages.0``, ...) or a list of them.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..config import ConfigError

__all__ = ["backbone_units", "freeze_modules", "keep_frozen_in_eval", "resolve_freeze"]


def backbone_units(model: nn.Module) -> list[str]:
    """Names of the backbone's modules in forward order, each CSP stage on its own (what an int freeze counts)."""
    units = []
    for name, child in model.backbone.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and name == "stages":
            units += [f"backbone.stages.{i}" for i in range(len(child))]
        elif any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
            units.append(f"backbone.{name}")
    return units


def resolve_freeze(model: nn.Module, spec: Any, key: str = "train.freeze") -> list[str]:
    """The module paths ``spec`` (see the module docstring) freezes in ``model``.

    Raises:
        ConfigError: a count beyond the backbone's modules, or a name that is no module of the model (one line
            naming ``key`` and what there is).
    """
    if spec is None or spec == 0 or spec == []:
        return []
    if isinstance(spec, int) and not isinstance(spec, bool):
        units = backbone_units(model)
        if not 0 <= spec <= len(units):
            raise ConfigError(f"{key}: {spec} but the backbone has {len(units)} modules to freeze in order "
                              f"({', '.join(units)}); use at most {len(units)}, or 'backbone'")
        return units[:spec]
    names = [spec] if isinstance(spec, str) else list(spec)
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules or not name:
            top = [n for n, _ in model.named_children()] + backbone_units(model)
            raise ConfigError(f"{key}: {name!r} is no module of this model; e.g. {', '.join(top)}")
    return names


def freeze_modules(model: nn.Module, names: list[str]) -> int:
    """Set ``requires_grad=False`` on every parameter under ``names`` and put those modules in eval mode.

    Returns:
        the number of parameters (elements) frozen.

    Raises:
        ConfigError: when nothing would be left to train.
    """
    frozen = 0
    for name in names:
        module = model.get_submodule(name)
        for p in module.parameters():
            if p.requires_grad:
                frozen += p.numel()
            p.requires_grad_(False)
    if names and not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"train.freeze: {', '.join(names)} freezes every parameter; nothing is left to train")
    keep_frozen_in_eval(model, names)
    return frozen


def keep_frozen_in_eval(model: nn.Module, names: list[str]) -> None:
    """Put the frozen modules back in eval mode (BN uses and keeps its running statistics); call after every
    ``model.train()``."""
    for name in names:
        model.get_submodule(name).eval()
