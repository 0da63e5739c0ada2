"""CSP-PAN neck: YOLOX's PAFPN topology (top-down FPN path, then bottom-up PAN path) built from CSP stages.

For L input levels (finest first) with channels ``in_channels`` and output channels ``out_channels``::

    top-down, for i = L-2 .. 0 (x starts as the coarsest input):
        lat[i] = lateral_convs[i](x)                                  1x1, channels(x) -> out[i]
        x      = top_down_stages[i](cat[upsample2x(lat[i]), in_i])    CSP, out[i] + in[i] -> out[i]
    bottom-up, for i = 0 .. L-2 (y starts as the finest top-down output):
        y      = bottom_up_stages[i](cat[down_convs[i](y), lat[i]])   3x3/2 conv, then CSP, 2 out[i] -> out[i+1]

Every CSP stage is a :class:`~cspdet.models.cspnet.CSPStage` in YOLOX ``CSPLayer`` form: one 1x1 expand conv,
split in halves, ``num_blocks`` Darknet bottlenecks **without** shortcut on the first half, concat, 1x1 fuse.
Upsampling is nearest-neighbour x2. With L = 3 and ``out = in`` this is YOLOX's ``YOLOPAFPN`` minus the
backbone: lateral_convs.1 = ``lateral_conv0``, lateral_convs.0 = ``reduce_conv1``, top_down_stages.1/.0 =
``C3_p4`` / ``C3_p3``, down_convs.0/.1 = ``bu_conv2`` / ``bu_conv1``, bottom_up_stages.0/.1 = ``C3_n3`` /
``C3_n4``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .blocks import DarknetBottleneck
from .csp_stage import CSPStage
from .layers import ActLayer, ConvBNAct, DWConv, NormLayer, YoloxBatchNorm2d
from .registry import ACTIVATIONS, NECKS, NORMS
from .spec import NeckSpec

__all__ = ["CSPPAN"]


class CSPPAN(nn.Module):
    """CSP path-aggregation neck.

    Args:
        in_channels: channels of the backbone feature maps, finest (stride 8) first.
        out_channels: channels of the output maps (default: ``in_channels``, as in YOLOX).
        num_blocks: bottlenecks per CSP stage (YOLOX: ``round(3 * depth)``).
        depthwise: depthwise-separable 3x3 convs (the stride-2 down convs and the bottlenecks; YOLOX-Nano).
        norm, act: norm and activation factories.

    Shapes: a list of L maps (B, in_channels[i], H / s_i, W / s_i) with s_{i+1} = 2 s_i -> a list of L maps
    (B, out_channels[i], H / s_i, W / s_i).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: Sequence[int] | None = None,
        num_blocks: int = 1,
        depthwise: bool = False,
        norm: NormLayer = YoloxBatchNorm2d,
        act: ActLayer | None = nn.SiLU,
    ) -> None:
        super().__init__()
        in_channels = [int(c) for c in in_channels]
        out_channels = list(in_channels) if out_channels is None else [int(c) for c in out_channels]
        if len(in_channels) < 2 or len(out_channels) != len(in_channels):
            raise ValueError(
                f"CSPPAN needs >= 2 levels and as many out_channels as in_channels, got in_channels={in_channels}, "
                f"out_channels={out_channels}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self._spec_args = dict(num_blocks=num_blocks, depthwise=depthwise, norm=norm, act=act)
        levels = len(in_channels)

        def csp(c_in: int, c_out: int) -> CSPStage:
            return CSPStage(
                c_in,
                c_out,
                num_blocks,
                DarknetBottleneck,
                expand_channels=2 * int(c_out * 0.5),
                blocks_first=True,
                block_kwargs=dict(bottle_ratio=1.0, shortcut=False, depthwise=depthwise),
                norm=norm,
                act=act,
            )

        down = DWConv if depthwise else ConvBNAct
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        # lateral_convs[i] reduces the running top-down map (coarsest input for i = L-2) to out[i].
        lateral_in = [out_channels[i + 1] for i in range(levels - 2)] + [in_channels[-1]]
        self.lateral_convs = nn.ModuleList(
            ConvBNAct(lateral_in[i], out_channels[i], 1, norm=norm, act=act) for i in range(levels - 1)
        )
        self.top_down_stages = nn.ModuleList(
            csp(out_channels[i] + in_channels[i], out_channels[i]) for i in range(levels - 1)
        )
        self.down_convs = nn.ModuleList(
            down(out_channels[i], out_channels[i], 3, 2, norm=norm, act=act) for i in range(levels - 1)
        )
        self.bottom_up_stages = nn.ModuleList(
            csp(2 * out_channels[i], out_channels[i + 1]) for i in range(levels - 1)
        )

    @property
    def spec(self) -> NeckSpec:
        """This neck as data (the input channels come from the backbone it is built on)."""
        a = self._spec_args
        return NeckSpec("csppan", tuple(self.out_channels), a["num_blocks"], a["depthwise"], NORMS.name_of(a["norm"]),
                        None if a["act"] is None else ACTIVATIONS.name_of(a["act"]))

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        if len(features) != len(self.in_channels):
            raise ValueError(f"CSPPAN expects {len(self.in_channels)} feature maps, got {len(features)}")
        x = features[-1]
        laterals: list[Tensor] = [x] * (len(features) - 1)
        for i in reversed(range(len(features) - 1)):
            laterals[i] = self.lateral_convs[i](x)
            x = self.top_down_stages[i](torch.cat([self.upsample(laterals[i]), features[i]], 1))
        outs = [x]
        for i in range(len(features) - 1):
            outs.append(self.bottom_up_stages[i](torch.cat([self.down_convs[i](outs[-1]), laterals[i]], 1)))
        return outs


NECKS.register("csppan", CSPPAN)
