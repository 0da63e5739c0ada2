"""Test helpers that shape weights: randomised BN (so parity checks mean something) and a YOLOX-layout copy
of a cspdet detector's weights.

YOLOX is not a cspdet dependency, so tests that need "a YOLOX checkpoint" make one with
:func:`cspdet_to_yolox_state_dict`, an independent inverse of the key table in
``cspdet/models/yolox_weights.py``; loading it back is then a real round trip.
"""

from __future__ import annotations

import torch
from torch import nn


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine params, so that BN folding and parity checks are meaningful."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model


def cspdet_to_yolox_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The YOLOX-layout state dict an official checkpoint of this detector would hold (BGR stem, split CSP
    ``expand`` into ``conv1``/``conv2``): the inverse of the key table in ``cspdet/models/yolox_weights.py``,
    written out independently so that loading it back through ``model.weights`` is a real round trip."""
    import re

    prefixes = [  # (cspdet prefix regex, YOLOX prefix, is a CSP stage)
        (r"backbone\.stem\.", "backbone.backbone.stem.", False),
        (r"backbone\.stages\.3\.spp\.", "backbone.backbone.dark5.1.", False),
        (r"backbone\.stages\.(\d)\.down\.", "backbone.backbone.dark{s}.0.", False),
        (r"backbone\.stages\.3\.", "backbone.backbone.dark5.2.", True),
        (r"backbone\.stages\.(\d)\.", "backbone.backbone.dark{s}.1.", True),
        (r"neck\.lateral_convs\.1\.", "backbone.lateral_conv0.", False),
        (r"neck\.lateral_convs\.0\.", "backbone.reduce_conv1.", False),
        (r"neck\.top_down_stages\.1\.", "backbone.C3_p4.", True),
        (r"neck\.top_down_stages\.0\.", "backbone.C3_p3.", True),
        (r"neck\.down_convs\.0\.", "backbone.bu_conv2.", False),
        (r"neck\.down_convs\.1\.", "backbone.bu_conv1.", False),
        (r"neck\.bottom_up_stages\.0\.", "backbone.C3_n3.", True),
        (r"neck\.bottom_up_stages\.1\.", "backbone.C3_n4.", True),
        (r"head\.levels\.(\d)\.stem\.", "head.stems.{i}.", False),
        (r"head\.levels\.(\d)\.cls_convs\.", "head.cls_convs.{i}.", False),
        (r"head\.levels\.(\d)\.reg_convs\.", "head.reg_convs.{i}.", False),
        (r"head\.levels\.(\d)\.cls_pred\.", "head.cls_preds.{i}.", False),
        (r"head\.levels\.(\d)\.reg_pred\.", "head.reg_preds.{i}.", False),
        (r"head\.levels\.(\d)\.obj_pred\.", "head.obj_preds.{i}.", False),
    ]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for pattern, target, csp in prefixes:
            m = re.match(pattern, key)
            if m:
                break
        else:
            raise AssertionError(f"no YOLOX name for {key}")
        if m.groups():
            target = target.format(s=int(m.group(1)) + 2, i=int(m.group(1)))
        rest = key[m.end():]
        if csp and rest.startswith("expand."):
            tail = rest[len("expand."):]
            if value.dim() == 0:  # num_batches_tracked
                out[f"{target}conv1.{tail}"] = out[f"{target}conv2.{tail}"] = value.clone()
            else:
                first, second = value.chunk(2, dim=0)
                out[f"{target}conv1.{tail}"], out[f"{target}conv2.{tail}"] = first.clone(), second.clone()
            continue
        if csp:
            rest = rest.replace("fuse.", "conv3.", 1) if rest.startswith("fuse.") else re.sub(r"^blocks\.", "m.", rest)
        if key == "backbone.stem.conv.conv.weight":  # RGB -> BGR within each space-to-depth group of 3
            value = value[:, torch.arange(value.shape[1]).view(-1, 3).flip(1).flatten()]
        out[target + rest] = value.clone()
    return out
