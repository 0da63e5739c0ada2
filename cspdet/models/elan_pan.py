"""ELAN-PAN neck: YOLOv8's path aggregation with C2f (or C3k2) stages, no lateral 1x1 convs.

For L input levels (finest first) with channels ``in_channels`` and output channels ``out_channels``::

    top-down, for i = L-2 .. 0 (x starts as the coarsest input, unchanged):
        td[i] = top_down_stages[i](cat[upsample2x(x), in_i])           stage, channels(x) + in[i] -> out[i]
        x     = td[i]
    bottom-up, for i = 0 .. L-2 (y starts as td[0], the finest output):
        y     = bottom_up_stages[i](cat[down_convs[i](y), lat])         3x3/2 conv out[i] -> out[i], then
                                                                        stage, out[i] + channels(lat) -> out[i+1]
        with lat = td[i+1] for i < L-2 and the coarsest input itself for i = L-2

Unlike :class:`~cspdet.models.CSPPAN` (YOLOX) there are no lateral 1x1 convs: the coarsest map is upsampled as it
is and the bottom-up path concatenates the top-down stage outputs. With L = 3, ``in = out = [64, 128, 256]`` and
one block per stage this is YOLOv8n's neck layer for layer (``[256, 512, 1024] x width``, the backbone's SPPF
output as the coarsest input). Any backbone returning a list of maps at strides s, 2s, 4s, ... feeds it (a
``features_only`` :class:`~cspdet.models.CSPNet` such as CSPResNet-50, or :class:`~cspdet.models.elan_backbone.C2fNet`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .elan_blocks import C2fStage
from .layers import ActLayer, ConvBNAct, NormLayer, YoloxBatchNorm2d
from .registry import ACTIVATIONS, NECKS, NORMS, STAGES
from .spec import NeckSpec, plain_data

__all__ = ["C2fPAN"]


class C2fPAN(nn.Module):
    """Path-aggregation neck of ELAN stages (YOLOv8 / YOLO11 layout).

    Args:
        in_channels: channels of the backbone maps, finest first (>= 2 levels, each twice the stride of the last).
        out_channels: channels of the output maps (default ``in_channels``, as in YOLOv8).
        num_blocks: blocks per stage (YOLOv8: ``max(round(3 * depth), 1)``).
        stage_fn: stage class called as ``stage_fn(c_in, c_out, num_blocks, norm=..., act=..., **stage_kwargs)``;
            default :class:`~cspdet.models.elan_blocks.C2fStage`; :class:`~cspdet.models.elan_blocks.C3k2Stage` for
            YOLO11.
        stage_kwargs: extra keywords for every stage; default ``{"block_kwargs": {"shortcut": False}}`` for
            C2fStage (YOLOv8's neck blocks have no residual), ``{}`` for other stage classes.
        stage_overrides: per-stage changes on top of ``stage_kwargs``, one mapping per stage in module order
            (``top_down_stages.0 .. L-2``, then ``bottom_up_stages.0 .. L-2``); a ``num_blocks`` key there replaces
            ``num_blocks``. YOLO11 n/s: C3k blocks in the last stage only; YOLO26: attention in the last stage.
        norm, act: norm and activation factories.

    Shapes: a list of L maps (B, in_channels[i], H / s_i, W / s_i) -> a list of L maps
    (B, out_channels[i], H / s_i, W / s_i).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: Sequence[int] | None = None,
        num_blocks: int = 1,
        stage_fn: Callable[..., nn.Module] | str = C2fStage,
        stage_kwargs: Mapping[str, Any] | None = None,
        stage_overrides: Sequence[Mapping[str, Any]] | None = None,
        norm: NormLayer = YoloxBatchNorm2d,
        act: ActLayer = nn.SiLU,
        depthwise: bool = False,
    ) -> None:
        super().__init__()
        if depthwise:  # the NeckSpec convention passes it; this neck has no depthwise variant
            raise ValueError("C2fPAN has no depthwise variant (depthwise=True)")
        if isinstance(stage_fn, str):
            stage_fn = STAGES.get(stage_fn)
        self._spec_args = dict(num_blocks=num_blocks, stage_fn=stage_fn, stage_kwargs=stage_kwargs,
                               stage_overrides=stage_overrides, norm=norm, act=act)
        in_channels = [int(c) for c in in_channels]
        out_channels = list(in_channels) if out_channels is None else [int(c) for c in out_channels]
        if len(in_channels) < 2 or len(out_channels) != len(in_channels):
            raise ValueError(f"C2fPAN needs >= 2 levels and as many out_channels as in_channels, got "
                             f"in_channels={in_channels}, out_channels={out_channels}")
        if stage_kwargs is None:
            stage_kwargs = {"block_kwargs": {"shortcut": False}} if stage_fn is C2fStage else {}
        self.in_channels, self.out_channels = in_channels, out_channels
        levels = len(in_channels)
        overrides = [dict(o) for o in stage_overrides] if stage_overrides is not None else \
            [{} for _ in range(2 * (levels - 1))]
        if len(overrides) != 2 * (levels - 1):
            raise ValueError(f"C2fPAN: stage_overrides needs one mapping per stage ({2 * (levels - 1)}), got "
                             f"{len(overrides)}")

        def stage(c_in: int, c_out: int, index: int) -> nn.Module:
            kwargs = {**stage_kwargs, **overrides[index]}
            return stage_fn(c_in, c_out, kwargs.pop("num_blocks", num_blocks), norm=norm, act=act, **kwargs)

        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        # Channels of the map upsampled into level i: the coarsest input for the top level, else td[i + 1].
        up_channels = [out_channels[i + 1] for i in range(levels - 2)] + [in_channels[-1]]
        self.top_down_stages = nn.ModuleList(stage(up_channels[i] + in_channels[i], out_channels[i], i)
                                             for i in range(levels - 1))
        self.down_convs = nn.ModuleList(ConvBNAct(out_channels[i], out_channels[i], 3, 2, norm=norm, act=act)
                                        for i in range(levels - 1))
        self.bottom_up_stages = nn.ModuleList(stage(out_channels[i] + up_channels[i], out_channels[i + 1],
                                                    levels - 1 + i) for i in range(levels - 1))

    @property
    def spec(self) -> NeckSpec:
        """This neck as data (``kind="c2fpan"``; the input channels come from the backbone it is built on)."""
        a = self._spec_args
        options: dict[str, Any] = {}
        if a["stage_fn"] is not C2fStage:
            options["stage_fn"] = STAGES.name_of(a["stage_fn"])
        if a["stage_kwargs"] is not None:
            options["stage_kwargs"] = plain_data(dict(a["stage_kwargs"]), "C2fPAN.stage_kwargs")
        if a["stage_overrides"] is not None:
            options["stage_overrides"] = plain_data([dict(o) for o in a["stage_overrides"]], "C2fPAN.stage_overrides")
        return NeckSpec("c2fpan", tuple(self.out_channels), a["num_blocks"], False, NORMS.name_of(a["norm"]),
                        ACTIVATIONS.name_of(a["act"]), options)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        if len(features) != len(self.in_channels):
            raise ValueError(f"C2fPAN expects {len(self.in_channels)} feature maps, got {len(features)}")
        levels = len(features)
        x = features[-1]
        laterals: list[Tensor] = [x] * levels  # laterals[i + 1] is what level i's top-down stage upsampled
        for i in reversed(range(levels - 1)):
            x = self.top_down_stages[i](torch.cat([self.upsample(x), features[i]], 1))
            laterals[i] = x
        outs = [laterals[0]]
        for i in range(levels - 1):
            outs.append(self.bottom_up_stages[i](torch.cat([self.down_convs[i](outs[-1]), laterals[i + 1]], 1)))
        return outs


NECKS.register("c2fpan", C2fPAN)
