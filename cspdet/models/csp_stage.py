"""The cross-stage-partial stage: the building block of :class:`~cspdet.models.CSPNet` and the CSP-PAN neck."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from .blocks import DarknetBottleneck
from .layers import ActLayer, ConvBNAct, DWConv, NormLayer, SPPBottleneck
from .registry import STAGES

__all__ = ["CSPStage"]


class CSPStage(nn.Module):
    """One cross-stage-partial stage: [down conv] -> [SPP] -> [1x1 expand] -> split -> blocks on one part
    -> [partial transition] -> concat -> 1x1 fuse.

    Data flow (C_* are channel counts, every conv is a :class:`ConvBNAct` with ``norm`` / ``act``)::

        x (B, in_channels, H, W)
          -> down    kernel ``down_kernel_size``, ``stride``, in_channels -> D       (only if built, see below)
          -> spp     SPPBottleneck(D, D), pools 5/9/13                               (only if ``spp``)
          -> expand  1x1, D -> E, no activation if ``linear_expand``                  (only if ``expand``)
          -> split E channels into the block part (C_b = E * split_ratio) and the shortcut part (C_s = E - C_b)
               blocks_first=False (timm):  channels [0:C_s] = shortcut, [C_s:E] = block part
               blocks_first=True  (YOLOX): channels [0:C_b] = block part, [C_b:E] = shortcut
          -> block part: num_blocks x block_fn(C_b, C_b, norm=norm, act=act, **block_kwargs)
          -> transition_b 1x1, C_b -> C_b                                           (only if ``transition_b``)
          -> concat: [shortcut, blocks] (blocks_first=False) or [blocks, shortcut] (blocks_first=True)
          -> fuse    1x1, E -> out_channels
        -> (B, out_channels, H / stride, W / stride)

    Args:
        in_channels: channels of the stage input.
        out_channels: channels of the stage output (the ``fuse`` conv).
        num_blocks: number of blocks on the block part, >= 1.
        block_fn: block class/factory following the contract in :mod:`cspdet.models.blocks`
            (``block_fn(C_b, C_b, norm=..., act=..., **block_kwargs)``, spatial size preserved).
        stride: stride of the down conv; ``stride != 1`` forces a down conv.
        down_channels: D, output channels of the down conv. The down conv is built iff
            ``down_channels is not None or stride != 1``; when built without ``down_channels``, D = in_channels.
            Without a down conv D = in_channels.
        down_kernel_size: kernel of the down conv (3 in timm and YOLOX).
        down_groups: groups of the down conv (32 in timm CSPResNeXt-50).
        depthwise_down: make the down conv a :class:`DWConv` (``.down.dconv`` / ``.down.pconv``; YOLOX-nano).
        spp: insert ``SPPBottleneck(D, D)`` after the down conv (YOLOX's last backbone stage).
        expand: build the 1x1 expand conv. If False the split is applied to the down-conv output
            (E = D) -- the plain "pre-conv, split, blocks, concat, 1x1" stage of ``CSPNet``'s defaults.
        expand_channels: E, output channels of the expand conv (default ``out_channels``).
        linear_expand: no activation on the expand conv (timm ``cross_linear``).
        split_ratio: fraction of the E channels sent through the blocks, in (0, 1); ``E * split_ratio`` must
            be a whole number.
        transition_b: add the 1x1 partial-transition conv on the block part (timm ``conv_transition_b``;
            CSPNet paper's "fusion first + last" variant). YOLOX / C3 stages have none.
        blocks_first: channel order of the split and of the concat, see the data flow. False reproduces
            timm's ``CrossStage``, True reproduces YOLOX's ``CSPLayer``.
        block_kwargs: extra keyword arguments for every ``block_fn`` call (e.g. ``bottle_ratio``,
            ``shortcut``, ``depthwise``, ``groups``).
        norm: norm factory for every conv (``YoloxBatchNorm2d`` for YOLOX's eps 1e-3 / momentum 0.03).
        act: activation factory for every conv and block.

    Submodules (``nn.Identity`` when not built): ``down``, ``spp``, ``expand``, ``blocks`` (``nn.Sequential``),
    ``transition_b``, ``fuse``. Attributes ``block_channels`` (C_b), ``shortcut_channels`` (C_s),
    ``expand_channels`` (E), ``in_channels``, ``out_channels``, ``stride``.

    YOLOX ``CSPLayer(in_c, out_c, n, shortcut, expansion=0.5, depthwise, act)`` is exactly::

        CSPStage(in_c, out_c, n, DarknetBottleneck, expand_channels=2 * int(out_c * 0.5), blocks_first=True,
                 block_kwargs=dict(bottle_ratio=1.0, shortcut=shortcut, depthwise=depthwise),
                 norm=YoloxBatchNorm2d, act=nn.SiLU)

    with YOLOX's two parallel 1x1 convs ``conv1`` (block path) and ``conv2`` (shortcut path) stacked into
    ``expand`` (same parameter count): ``expand.conv.weight = cat([conv1.conv.weight, conv2.conv.weight])``
    and likewise each ``bn`` tensor; ``blocks.{i}`` <- ``m.{i}``; ``fuse`` <- ``conv3``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        block_fn: Callable[..., nn.Module] = DarknetBottleneck,
        *,
        stride: int = 1,
        down_channels: int | None = None,
        down_kernel_size: int = 3,
        down_groups: int = 1,
        depthwise_down: bool = False,
        spp: bool = False,
        expand: bool = True,
        expand_channels: int | None = None,
        linear_expand: bool = False,
        split_ratio: float = 0.5,
        transition_b: bool = False,
        blocks_first: bool = False,
        block_kwargs: Mapping[str, Any] | None = None,
        norm: NormLayer = nn.BatchNorm2d,
        act: ActLayer = nn.SiLU,
    ) -> None:
        super().__init__()
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be an integer >= 1 (a CSP stage needs a block branch), "
                             f"got {num_blocks!r}")
        if not 0.0 < split_ratio < 1.0:
            raise ValueError(f"split_ratio must be in (0, 1) (both the block part and the shortcut part need "
                             f"channels), got {split_ratio}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("stride", stride),
                            ("down_kernel_size", down_kernel_size), ("down_groups", down_groups)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not callable(block_fn):
            raise ValueError(f"block_fn must be a block class or factory, got {block_fn!r}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.blocks_first = blocks_first

        channels = in_channels
        if down_channels is not None or stride != 1:
            d = in_channels if down_channels is None else down_channels
            if depthwise_down:
                self.down: nn.Module = DWConv(channels, d, down_kernel_size, stride, norm=norm, act=act)
            else:
                if channels % down_groups or d % down_groups:
                    raise ValueError(f"down_groups={down_groups} must divide the down conv's in/out channels "
                                     f"({channels} -> {d})")
                self.down = ConvBNAct(channels, d, down_kernel_size, stride, groups=down_groups, norm=norm, act=act)
            channels = d
        else:
            self.down = nn.Identity()
        self.spp: nn.Module = SPPBottleneck(channels, channels, norm=norm, act=act) if spp else nn.Identity()
        if expand:
            e = out_channels if expand_channels is None else expand_channels
            self.expand: nn.Module = ConvBNAct(channels, e, 1, norm=norm, act=None if linear_expand else act)
            channels = e
        else:
            self.expand = nn.Identity()
        self.expand_channels = channels

        exact = channels * split_ratio
        block_channels = int(round(exact))
        if abs(exact - block_channels) > 1e-6 * max(1, channels) or not 0 < block_channels < channels:
            raise ValueError(f"split_ratio={split_ratio} cannot split {channels} channels into two whole, non-empty "
                             f"parts ({channels} * {split_ratio} = {exact:g}); pick channels divisible by the ratio")
        self.block_channels = block_channels
        self.shortcut_channels = channels - block_channels

        kwargs = dict(block_kwargs or {})
        self.blocks = nn.Sequential(*(block_fn(block_channels, block_channels, norm=norm, act=act, **kwargs)
                                      for _ in range(num_blocks)))
        self.transition_b: nn.Module = (ConvBNAct(block_channels, block_channels, 1, norm=norm, act=act)
                                        if transition_b else nn.Identity())
        self.fuse = ConvBNAct(channels, out_channels, 1, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride)."""
        x = self.expand(self.spp(self.down(x)))
        if self.blocks_first:
            xb, xs = x.split([self.block_channels, self.shortcut_channels], dim=1)
        else:
            xs, xb = x.split([self.shortcut_channels, self.block_channels], dim=1)
        xb = self.transition_b(self.blocks(xb))
        return self.fuse(torch.cat([xb, xs] if self.blocks_first else [xs, xb], dim=1))


STAGES.register("csp", CSPStage)
