"""Exponential moving average of model weights (YOLOX / timm style).

The EMA model is what gets evaluated and saved as the "best" weights. Its decay ramps up from 0 so that
early, mostly random weights are forgotten quickly: ``d(n) = decay * (1 - exp(-n / tau))`` after ``n``
updates (YOLOX: decay 0.9998, tau 2000).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Iterable

import torch
from torch import nn

__all__ = ["ModelEMA", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class ModelEMA:
    """Keeps ``ema`` = a moving average of a model's floating-point parameters and buffers.

    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are copied, not averaged.

    Args:
        model: the model being trained (may be DDP-wrapped); a deep copy in eval mode becomes ``self.ema``.
        decay: asymptotic decay.
        tau: ramp length in updates.
        updates: number of updates already done (when continuing a run).
        fixed: state-dict keys that never change in training (``train.freeze``): left as they are, since
            ``d * x + (1 - d) * x`` is not always ``x`` in floating point and frozen weights must stay exact.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, tau: float = 2000.0, updates: int = 0,
                 fixed: Iterable[str] = ()):
        self.fixed = frozenset(fixed)
        self.ema = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    def current_decay(self) -> float:
        """``d(updates)``: the decay the latest :meth:`update` used."""
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights."""
        self.updates += 1
        d = self.current_decay()
        source = unwrap_model(model).state_dict()
        for name, value in self.ema.state_dict().items():
            if name in self.fixed:
                continue
            new = source[name].detach()
            if value.dtype.is_floating_point:
                value.mul_(d).add_(new.to(value.dtype), alpha=1.0 - d)
            else:
                value.copy_(new)

    def state_dict(self) -> dict[str, Any]:
        """Plain, ``weights_only``-loadable state: the averaged weights and the update count."""
        return {"model": self.ema.state_dict(), "updates": self.updates, "decay": self.decay, "tau": self.tau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state["model"])
        self.updates = int(state["updates"])
        self.decay = float(state.get("decay", self.decay))
        self.tau = float(state.get("tau", self.tau))
