"""Load timm ``cspresnet50`` / ``cspresnext50`` / ``cspdarknet53`` weights into the matching cspdet preset.

The presets are layer-for-layer copies of timm's layouts, so the import is a pure key rename (no tensor is
reshaped). Module names differ only in the CSP stage and the stem:

==============================  ============================
timm                            cspdet
==============================  ============================
``stem.conv1``                  ``stem.conv``
``stages.{i}.conv_down``        ``stages.{i}.down``
``stages.{i}.conv_exp``         ``stages.{i}.expand``
``stages.{i}.blocks.{j}.convK`` ``stages.{i}.blocks.{j}.convK``
``stages.{i}.conv_transition_b`` ``stages.{i}.transition_b``
``stages.{i}.conv_transition``  ``stages.{i}.fuse``
``head.fc``                     ``head.fc``
==============================  ============================

Every conv is ``conv.weight`` + ``bn.{weight,bias,running_mean,running_var,num_batches_tracked}`` on both
sides (timm's ``BatchNormAct2d`` keeps BatchNorm2d's tensor names).
"""

from __future__ import annotations

import re
from typing import Mapping

import torch
from torch import nn

__all__ = ["load_timm_weights", "timm_to_cspdet_key"]

# Order matters: "conv_transition_b" must be renamed before its prefix "conv_transition".
_STAGE_RENAMES = (
    ("conv_transition_b", "transition_b"),
    ("conv_transition", "fuse"),
    ("conv_down", "down"),
    ("conv_exp", "expand"),
)
_STAGE_RE = re.compile(r"^stages\.(\d+)\.([A-Za-z_]+)(\..*)$")


def timm_to_cspdet_key(key: str) -> str:
    """The cspdet state-dict key of a timm CspNet key (keys with no counterpart are returned unchanged)."""
    if key.startswith("stem.conv1."):
        return "stem.conv." + key[len("stem.conv1."):]
    match = _STAGE_RE.match(key)
    if match:
        index, name, rest = match.groups()
        for old, new in _STAGE_RENAMES:
            if name == old:
                return f"stages.{index}.{new}{rest}"
    return key


def _short_list(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_timm_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Copy a timm CspNet ``state_dict`` into ``model`` (strict) and return ``model``.

    Args:
        model: :func:`~cspdet.models.csp_resnet50`, :func:`~cspdet.models.csp_resnext50_32x4d` or
            :func:`~cspdet.models.csp_darknet53` (or any CSPNet with the same layout). A ``features_only``
            model takes the weights without the classifier's ``head.*`` tensors.
        state_dict: e.g. ``timm.create_model("cspresnet50").state_dict()``, the matching architecture.

    Raises:
        ValueError: listing every missing key (in the model, absent from the renamed timm dict), every
            unexpected key (timm key with no place in the model, by its timm name) and every shape mismatch.
            Nothing is copied in that case.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"load_timm_weights: state_dict must be a mapping of tensors, got {type(state_dict).__name__}")
    features_only = bool(getattr(model, "features_only", False))
    own = model.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in state_dict.items():
        new_key = timm_to_cspdet_key(key)
        if features_only and new_key.startswith("head."):
            continue  # the classifier has no place in a feature extractor
        if new_key in own:
            renamed[new_key] = tensor
        else:
            unexpected.append(key)
    missing = [key for key in own if key not in renamed]
    mismatched = [f"{key} (model {tuple(own[key].shape)} vs timm {tuple(t.shape)})"
                  for key, t in renamed.items() if tuple(t.shape) != tuple(own[key].shape)]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing key(s): {_short_list(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected timm key(s): {_short_list(unexpected)}")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatch(es): {_short_list(mismatched)}")
        raise ValueError("load_timm_weights: the timm state dict does not match this model (wrong preset or "
                         "num_classes?): " + "; ".join(problems))
    model.load_state_dict(renamed, strict=True)
    return model
