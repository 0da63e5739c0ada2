"""ELAN-style CSP stages (YOLOv8's C2f, YOLO11's C3k2), their blocks and SPPF.

The family's idea (ELAN / CSP-ELAN): a CSP stage whose **every** block output joins the final concat, so the
fuse conv sees features of every depth (gradient paths of every length) instead of only the last block's.

* :class:`ConvBottleneck` -- kxk -> kxk residual block (YOLOv8's ``Bottleneck``); a block for ``block_fn``.
* :class:`C3k` -- a small YOLOX/C3-style CSP stage (a :class:`~cspdet.models.cspnet.CSPStage`) of
  ``ConvBottleneck`` blocks that follows the block contract of :mod:`cspdet.models.blocks`, so it can itself be a
  ``block_fn`` (YOLO11's C3k2 nests it inside C2f).
* :class:`C2fStage` -- [down conv] -> 1x1 expand to 2c -> split -> n chained blocks -> concat of both halves and
  every block output -> 1x1 fuse (YOLOv8's C2f); :class:`C3k2Stage` is its YOLO11 variant.
* :class:`BottleneckPSA` -- a :class:`ConvBottleneck` followed by a :class:`~cspdet.models.attention.PSABlock`
  (the blocks of YOLO26's ``C3k2(attn=True)``).
* :class:`SPPF` -- fast spatial pyramid pooling: three chained 5x5 max-pools (= pools 5/9/13 of SPP).

The backbone built from them is :class:`~cspdet.models.elan_backbone.C2fNet`, the neck
:class:`~cspdet.models.elan_pan.C2fPAN`. Every conv unit is a :class:`~cspdet.models.layers.ConvBNAct`, so
:func:`~cspdet.models.fuse_conv_bn` folds the BatchNorms of all of these for inference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .attention import PSABlock, psa_heads
from .csp_stage import CSPStage
from .layers import ActLayer, ConvBNAct, NormLayer, YoloxBatchNorm2d
from .registry import BLOCKS, STAGES

__all__ = ["BottleneckPSA", "ConvBottleneck", "C3k", "C2fStage", "C3k2Stage", "SPPF"]


def _check_positive(**values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class ConvBottleneck(nn.Module):
    """Two kxk conv units, plus the input when ``shortcut`` (YOLOv8 / YOLO11 ``Bottleneck``).

    ``conv1`` ``first_kernel_size`` in -> hidden (act), ``conv2`` ``kernel_size`` hidden -> out (act, ``groups``),
    ``y = conv2(conv1(x)) + x`` iff ``shortcut and in == out`` (no activation after the add).
    hidden = ``int(out_channels * bottle_ratio)`` (truncation, as the published layouts count channels).

    Unlike :class:`~cspdet.models.DarknetBottleneck` (1x1 then 3x3), both convs are 3x3 by default: inside C2f
    (``bottle_ratio=1.0``) that is the published YOLOv8 block; inside C3k2 without C3k, ``bottle_ratio=0.5``.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3,
                 first_kernel_size: int | None = None, bottle_ratio: float = 1.0, shortcut: bool = True, groups: int = 1,
                 norm: NormLayer = YoloxBatchNorm2d, act: ActLayer = nn.SiLU) -> None:
        super().__init__()
        hidden = int(out_channels * bottle_ratio)
        if hidden < 1:
            raise ValueError(f"ConvBottleneck: out_channels={out_channels} * bottle_ratio={bottle_ratio} leaves no "
                             f"hidden channels")
        k1 = kernel_size if first_kernel_size is None else first_kernel_size
        self.conv1 = ConvBNAct(in_channels, hidden, k1, norm=norm, act=act)
        self.conv2 = ConvBNAct(hidden, out_channels, kernel_size, groups=groups, norm=norm, act=act)
        self.use_add = shortcut and in_channels == out_channels

    def zero_init_last(self) -> None:
        """Zero the last BN scale of a residual block so it starts as the identity (``CSPNet(weight_init="timm")``
        calls it); a block without the add is left alone (it would output a constant)."""
        weight = getattr(self.conv2.bn, "weight", None)
        if self.use_add and isinstance(weight, torch.Tensor):
            nn.init.zeros_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class BottleneckPSA(nn.Sequential):
    """YOLO26's attention block inside ``C3k2(attn=True)``: ``ConvBottleneck(c, c, bottle_ratio=0.5)`` then
    ``PSABlock(c)`` with one head per 64 channels. Follows the block contract (``in_channels == out_channels``).

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, *, shortcut: bool = True,
                 norm: NormLayer = YoloxBatchNorm2d, act: ActLayer = nn.SiLU) -> None:
        if in_channels != out_channels:
            raise ValueError(f"BottleneckPSA keeps its width: in_channels={in_channels} != out_channels={out_channels}")
        super().__init__(ConvBottleneck(in_channels, out_channels, bottle_ratio=0.5, shortcut=shortcut, norm=norm,
                                        act=act),
                         PSABlock(out_channels, 0.5, psa_heads(out_channels), norm=norm, act=act))


class C3k(CSPStage):
    """YOLO11's ``C3k``: a C3 (YOLOX ``CSPLayer``) stage of ``num_blocks`` kxk :class:`ConvBottleneck` blocks.

    Data flow: 1x1 expand in -> 2h (h = ``int(out_channels * expansion)``; the two parallel 1x1 convs of C3 stacked
    into one, same parameters), split in halves, the blocks (``ConvBottleneck(h, h, bottle_ratio=1.0)``) on the
    first, concat [blocks, shortcut], 1x1 fuse to ``out_channels``. It is a :class:`~cspdet.models.CSPStage`
    (``blocks_first=True``) that follows the block contract of :mod:`cspdet.models.blocks` --
    ``C3k(c, c, norm=..., act=..., **kwargs)`` preserves the spatial size -- so it can be any stage's
    ``block_fn``; :class:`C3k2Stage` uses it that way.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, *, num_blocks: int = 2, kernel_size: int = 3,
                 shortcut: bool = True, expansion: float = 0.5, groups: int = 1,
                 norm: NormLayer = YoloxBatchNorm2d, act: ActLayer = nn.SiLU) -> None:
        hidden = int(out_channels * expansion)
        super().__init__(in_channels, out_channels, num_blocks, ConvBottleneck, expand_channels=2 * hidden,
                         blocks_first=True, norm=norm, act=act,
                         block_kwargs=dict(kernel_size=kernel_size, bottle_ratio=1.0, shortcut=shortcut, groups=groups))


class C2fStage(nn.Module):
    """ELAN-style CSP stage (YOLOv8's ``C2f``): every block's output joins the final concat.

    Data flow (every conv a :class:`ConvBNAct` with ``norm`` / ``act``)::

        x (B, in_channels, H, W)
          -> down    kernel ``down_kernel_size``, ``stride``, in -> D           (only if built; as CSPStage)
          -> expand  1x1, D -> 2c, c = int(out_channels * expansion)
          -> split   [y0, y1] (c channels each)
          -> y_{i+1} = blocks[i](y_i) for i = 1..n, each block_fn(c, c, norm=norm, act=act, **block_kwargs)
          -> concat  [y0, y1, y2, ..., y_{n+1}]                           (2 + n) c channels
          -> fuse    1x1, (2 + n) c -> out_channels
        -> (B, out_channels, H / stride, W / stride)

    Args:
        in_channels, out_channels, num_blocks, block_fn, block_kwargs, norm, act: as in
            :class:`~cspdet.models.CSPStage` (``block_fn`` follows the contract of :mod:`cspdet.models.blocks`);
            the default block is YOLOv8's: :class:`ConvBottleneck` (3x3 -> 3x3, ``bottle_ratio=1.0``), with a
            residual unless ``block_kwargs={"shortcut": False}`` (YOLOv8's neck).
        stride, down_channels, down_kernel_size: the optional down conv in front, as in CSPStage: built iff
            ``down_channels is not None or stride != 1`` (D = ``down_channels`` or ``in_channels``). With it the
            stage is a whole backbone stage ("Conv 3x3/2 + C2f" in YOLOv8's layout).
        expansion: block width c as a fraction of ``out_channels`` (YOLOv8: 0.5); the expand conv gives 2c and
            the split is 50/50, so the shortcut half and the block half both have c channels.

    Submodules: ``down`` (``nn.Identity`` if not built), ``expand``, ``blocks`` (``nn.ModuleList``), ``fuse``.
    YOLOv8 ``C2f(c1, c2, n, shortcut)`` = ``C2fStage(c1, c2, n, block_kwargs=dict(shortcut=shortcut))`` with
    ``cv1`` -> ``expand``, ``m.{i}`` -> ``blocks.{i}`` (``cv1``/``cv2`` -> ``conv1``/``conv2``), ``cv2`` -> ``fuse``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        block_fn: Callable[..., nn.Module] = ConvBottleneck,
        *,
        stride: int = 1,
        down_channels: int | None = None,
        down_kernel_size: int = 3,
        expansion: float = 0.5,
        block_kwargs: Mapping[str, Any] | None = None,
        norm: NormLayer = YoloxBatchNorm2d,
        act: ActLayer = nn.SiLU,
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, out_channels=out_channels, num_blocks=num_blocks, stride=stride,
                        down_kernel_size=down_kernel_size)
        if not callable(block_fn):
            raise ValueError(f"block_fn must be a block class or factory, got {block_fn!r}")
        hidden = int(out_channels * expansion)
        if hidden < 1:
            raise ValueError(f"C2fStage: out_channels={out_channels} * expansion={expansion} leaves no block channels")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.block_channels = hidden

        channels = in_channels
        if down_channels is not None or stride != 1:
            d = in_channels if down_channels is None else down_channels
            self.down: nn.Module = ConvBNAct(channels, d, down_kernel_size, stride, norm=norm, act=act)
            channels = d
        else:
            self.down = nn.Identity()
        self.expand = ConvBNAct(channels, 2 * hidden, 1, norm=norm, act=act)
        kwargs = dict(block_kwargs or {})
        self.blocks = nn.ModuleList(block_fn(hidden, hidden, norm=norm, act=act, **kwargs) for _ in range(num_blocks))
        self.fuse = ConvBNAct((2 + num_blocks) * hidden, out_channels, 1, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride)."""
        ys = list(self.expand(self.down(x)).chunk(2, 1))
        for block in self.blocks:
            ys.append(block(ys[-1]))
        return self.fuse(torch.cat(ys, 1))


class C3k2Stage(C2fStage):
    """YOLO11's ``C3k2``: a :class:`C2fStage` whose blocks are :class:`C3k` (``c3k=True``), :class:`BottleneckPSA`
    (``attn=True``, YOLO26) or plain :class:`ConvBottleneck` with hidden = c / 2.

    Args:
        c3k: blocks are ``C3k(c, c, num_blocks=2, kernel_size=kernel_size)`` (YOLO11 m/l/x and the deep stages of
            n/s) instead of ``ConvBottleneck(c, c, bottle_ratio=0.5)``.
        attn: blocks are ``BottleneckPSA(c, c)`` (YOLO26's last neck stage); takes precedence over ``c3k``.
        shortcut: residual adds inside the blocks.
        kernel_size: kernel of the C3k bottlenecks.
        expansion, stride, down_channels, down_kernel_size, norm, act: as :class:`C2fStage` (YOLO11 passes
            ``expansion=0.25`` for its two shallow backbone stages).

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, *, c3k: bool = False,
                 attn: bool = False, shortcut: bool = True, kernel_size: int = 3, expansion: float = 0.5,
                 stride: int = 1, down_channels: int | None = None, down_kernel_size: int = 3,
                 norm: NormLayer = YoloxBatchNorm2d, act: ActLayer = nn.SiLU) -> None:
        if attn:
            block_fn: Callable[..., nn.Module] = BottleneckPSA
            block_kwargs: dict[str, Any] = dict(shortcut=shortcut)
        elif c3k:
            block_fn, block_kwargs = C3k, dict(num_blocks=2, kernel_size=kernel_size, shortcut=shortcut)
        else:
            block_fn, block_kwargs = ConvBottleneck, dict(bottle_ratio=0.5, shortcut=shortcut)
        super().__init__(in_channels, out_channels, num_blocks, block_fn, stride=stride, down_channels=down_channels,
                         down_kernel_size=down_kernel_size, expansion=expansion, block_kwargs=block_kwargs,
                         norm=norm, act=act)


class SPPF(nn.Module):
    """Fast spatial pyramid pooling (YOLOv5/v8 ``SPPF``): one max-pool applied ``num_pools`` times in a chain.

    ``conv1`` 1x1 in -> in // 2; ``y = [x, p(x), p(p(x)), p(p(p(x)))]`` with p = ``kernel_size`` max-pool, stride 1;
    concat ((1 + num_pools) x in // 2) -> ``conv2`` 1x1 to ``out_channels``; plus the input when ``shortcut`` and
    in == out. Chained 5x5 pools see 5/9/13 windows, so with the defaults the output equals
    :class:`~cspdet.models.SPPBottleneck` with pools (5, 9, 13) and the same weights, at about a third of the
    pooling cost. YOLO26 uses ``shortcut=True`` and a linear ``conv1`` (``conv1_act=False``).

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, num_pools: int = 3,
                 shortcut: bool = False, conv1_act: bool = True,
                 norm: NormLayer = YoloxBatchNorm2d, act: ActLayer = nn.SiLU) -> None:
        super().__init__()
        _check_positive(kernel_size=kernel_size, num_pools=num_pools)
        hidden = in_channels // 2
        self.num_pools = num_pools
        self.conv1 = ConvBNAct(in_channels, hidden, 1, norm=norm, act=act if conv1_act else None)
        self.pool = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)
        self.conv2 = ConvBNAct((1 + num_pools) * hidden, out_channels, 1, norm=norm, act=act)
        self.use_add = shortcut and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = [self.conv1(x)]
        for _ in range(self.num_pools):
            ys.append(self.pool(ys[-1]))
        y = self.conv2(torch.cat(ys, 1))
        return y + x if self.use_add else y


BLOCKS.register("conv_bottleneck", ConvBottleneck)
BLOCKS.register("c3k", C3k)
BLOCKS.register("bottleneck_psa", BottleneckPSA)
STAGES.register("c2f", C2fStage)
STAGES.register("c3k2", C3k2Stage)
