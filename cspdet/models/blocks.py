"""Residual blocks that a :class:`~cspdet.models.cspnet.CSPStage` stacks on its block branch.

Block constructor contract (what ``block_fn`` in ``CSPStage`` / ``CSPNet(stage_defs=...)`` must accept)::

    block = block_fn(in_channels, out_channels, norm=norm, act=act, **block_kwargs)
    y = block(x)    # x: (B, in_channels, H, W) -> y: (B, out_channels, H, W)  (same H, W: no striding)

- ``in_channels`` / ``out_channels`` are positional; a CSP stage always passes equal values (the width of
  its block branch), so a block needs no projection to be usable in a stage.
- ``norm`` is a norm factory called as ``norm(channels)`` (e.g. ``nn.BatchNorm2d``), ``act`` an activation
  factory called with no arguments (e.g. ``nn.SiLU``) -- both keyword arguments; blocks should build their
  convs with them so a model-wide norm/act choice reaches every layer.
- ``block_kwargs`` are whatever extra keywords the caller configured (``CSPStage(block_kwargs=...)``); a
  custom block only needs to accept those it is given.
- Optional: a ``zero_init_last()`` method. ``CSPNet(weight_init="timm")`` calls it after the conv init (as
  timm does) so that a residual block starts as the identity; blocks without a residual simply omit it.

The shipped blocks all accept ``bottle_ratio`` (hidden width = ``int(round(out_channels * bottle_ratio))``).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ActLayer, ConvBNAct, DWConv, NormLayer

__all__ = ["ResNetBottleneck", "ResNeXtBottleneck", "DarknetBottleneck"]


def _hidden(out_channels: int, bottle_ratio: float, groups: int, name: str) -> int:
    if bottle_ratio <= 0:
        raise ValueError(f"{name}: bottle_ratio must be > 0, got {bottle_ratio}")
    hidden = int(round(out_channels * bottle_ratio))
    if hidden < 1:
        raise ValueError(f"{name}: out_channels={out_channels} * bottle_ratio={bottle_ratio} leaves no hidden "
                         f"channels")
    if hidden % groups:
        raise ValueError(f"{name}: hidden channels {hidden} (out_channels={out_channels} * bottle_ratio="
                         f"{bottle_ratio}) are not divisible by groups={groups}")
    return hidden


def _zero_bn_scale(bn: nn.Module) -> None:
    # Only affine norm layers have a scale to zero (a user's norm factory may build something else).
    weight = getattr(bn, "weight", None)
    if isinstance(weight, torch.Tensor):
        nn.init.zeros_(weight)


class ResNetBottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce -> 3x3 (grouped when ``groups > 1``) -> 1x1 expand (linear), add, act.

    ``conv1`` 1x1 in -> hidden (act), ``conv2`` 3x3 hidden -> hidden (act), ``conv3`` 1x1 hidden -> out
    (no act), ``y = act(conv3(...) + shortcut(x))``; hidden = ``round(out_channels * bottle_ratio)``. The
    shortcut is the identity when ``in_channels == out_channels``, else a linear 1x1 ConvBNAct projection
    (``.shortcut``). Layout of timm's CSPResNet ``BottleneckBlock``.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, *, bottle_ratio: float = 0.5, groups: int = 1,
                 norm: NormLayer = nn.BatchNorm2d, act: ActLayer = nn.ReLU) -> None:
        super().__init__()
        hidden = _hidden(out_channels, bottle_ratio, groups, type(self).__name__)
        self.conv1 = ConvBNAct(in_channels, hidden, 1, norm=norm, act=act)
        self.conv2 = ConvBNAct(hidden, hidden, 3, groups=groups, norm=norm, act=act)
        self.conv3 = ConvBNAct(hidden, out_channels, 1, norm=norm, act=None)
        self.shortcut = (nn.Identity() if in_channels == out_channels
                         else ConvBNAct(in_channels, out_channels, 1, norm=norm, act=None))
        self.act = act()

    def zero_init_last(self) -> None:
        """Zero the scale of the last BN of the residual branch (timm's ``zero_init_last``): the block starts
        as ``act(shortcut(x))``, which eases the optimisation of deep stacks."""
        _zero_bn_scale(self.conv3.bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class ResNeXtBottleneck(ResNetBottleneck):
    """ResNeXt bottleneck: :class:`ResNetBottleneck` with a grouped 3x3 (``groups=32``) and by default no
    width reduction (``bottle_ratio=1.0``) -- timm CSPResNeXt-50's block (hidden = out, 32 groups).

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, *, bottle_ratio: float = 1.0, groups: int = 32,
                 norm: NormLayer = nn.BatchNorm2d, act: ActLayer = nn.ReLU) -> None:
        super().__init__(in_channels, out_channels, bottle_ratio=bottle_ratio, groups=groups, norm=norm, act=act)


class DarknetBottleneck(nn.Module):
    """Darknet / YOLOX bottleneck: 1x1 to hidden -> 3x3 to out, plus the input when ``shortcut``.

    ``conv1`` 1x1 in -> hidden (act), ``conv2`` 3x3 hidden -> out (act; a :class:`DWConv` with
    ``dconv``/``pconv`` when ``depthwise``), ``y = conv2(conv1(x)) + x`` iff ``shortcut and in == out``
    (no activation after the add). hidden = ``int(round(out_channels * bottle_ratio))``; ``bottle_ratio``
    is YOLOX's ``expansion`` (1.0 inside YOLOX CSP layers) and timm's ``bottle_ratio`` (DarkBlock).

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, *, bottle_ratio: float = 0.5, shortcut: bool = True,
                 depthwise: bool = False, norm: NormLayer = nn.BatchNorm2d, act: ActLayer = nn.SiLU) -> None:
        super().__init__()
        hidden = _hidden(out_channels, bottle_ratio, 1, type(self).__name__)
        self.conv1 = ConvBNAct(in_channels, hidden, 1, norm=norm, act=act)
        self.conv2: nn.Module = (DWConv(hidden, out_channels, 3, norm=norm, act=act) if depthwise
                                 else ConvBNAct(hidden, out_channels, 3, norm=norm, act=act))
        self.use_add = shortcut and in_channels == out_channels

    def zero_init_last(self) -> None:
        """Zero the scale of the last BN of the residual branch (timm's ``zero_init_last`` for its DarkBlock),
        so a residual block starts as the identity. A block without the residual add is left alone: zeroing it
        would make it output a constant."""
        if self.use_add:
            last = self.conv2.pconv if isinstance(self.conv2, DWConv) else self.conv2
            _zero_bn_scale(last.bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y
