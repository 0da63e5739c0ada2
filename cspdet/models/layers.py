"""Basic layers shared by every cspdet model: conv-norm-act, depthwise conv, Focus, SPP, conv-BN fusion.

All layers take and return NCHW float tensors. Module attribute names follow the YOLOX / timm conventions
(``conv`` / ``bn`` / ``act``, ``dconv`` / ``pconv``, ``conv1`` / ``conv2`` / ``m``) so that weight-import
code can map checkpoints with simple key renames.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "NormLayer",
    "ActLayer",
    "YoloxBatchNorm2d",
    "YOLOX_BN_EPS",
    "YOLOX_BN_MOMENTUM",
    "ConvBNAct",
    "DWConv",
    "Focus",
    "SPPBottleneck",
    "fuse_conv_bn",
]

#: A norm layer factory: called as ``norm(num_channels)``; a class such as ``nn.BatchNorm2d`` or a partial.
NormLayer = Callable[[int], nn.Module]
#: An activation factory: called with no arguments, e.g. ``nn.SiLU``; ``None`` means no activation (linear).
ActLayer = Callable[[], nn.Module]

# YOLOX sets these on every BatchNorm2d of the model (yolox_base.get_model); they matter for weight parity
# (eps enters the normalisation) and for training dynamics (momentum of the running statistics).
YOLOX_BN_EPS = 1e-3
YOLOX_BN_MOMENTUM = 0.03


class YoloxBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with YOLOX's defaults ``eps=1e-3, momentum=0.03``.

    A subclass rather than a partial so it can be passed wherever a ``type[nn.Module]`` norm is expected
    (e.g. ``CSPNet(norm=YoloxBatchNorm2d)``); state-dict keys are identical to ``nn.BatchNorm2d``.
    """

    def __init__(self, num_features: int, eps: float = YOLOX_BN_EPS, momentum: float = YOLOX_BN_MOMENTUM,
                 **kwargs) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, **kwargs)


def _make_act(act: ActLayer | None) -> nn.Module:
    return nn.Identity() if act is None else act()


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> norm -> activation, with "same" padding ``(kernel_size - 1) // 2``.

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out.
        kernel_size: square kernel size.
        stride: conv stride; output spatial size is ``ceil(H / stride)`` for odd kernels.
        groups: conv groups (``in_channels`` for a depthwise conv).
        norm: norm factory called as ``norm(out_channels)``; ``YoloxBatchNorm2d`` gives YOLOX's
            eps 1e-3 / momentum 0.03.
        act: activation factory called with no arguments, or ``None`` for a linear unit (``nn.Identity``).

    Shapes: (B, C_in, H, W) -> (B, C_out, H / stride, W / stride).

    Submodules ``.conv``, ``.bn``, ``.act``. After :func:`fuse_conv_bn`, ``.bn`` is ``nn.Identity`` and
    ``.conv`` carries a bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 norm: NormLayer = nn.BatchNorm2d, act: ActLayer | None = nn.SiLU) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=(kernel_size - 1) // 2, groups=groups, bias=False)
        self.bn = norm(out_channels)
        self.act = _make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DWConv(nn.Module):
    """Depthwise-separable conv: depthwise ``kernel_size`` conv (``dconv``) then pointwise 1x1 (``pconv``).

    Both halves are :class:`ConvBNAct` with norm and activation (YOLOX ``DWConv``; key names
    ``dconv`` / ``pconv``). Shapes: (B, C_in, H, W) -> (B, C_out, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 norm: NormLayer = nn.BatchNorm2d, act: ActLayer | None = nn.SiLU) -> None:
        super().__init__()
        self.dconv = ConvBNAct(in_channels, in_channels, kernel_size, stride, groups=in_channels, norm=norm, act=act)
        self.pconv = ConvBNAct(in_channels, out_channels, 1, 1, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pconv(self.dconv(x))


class Focus(nn.Module):
    """Space-to-depth stem (YOLOX ``Focus``): 2x2 pixel blocks -> 4x channels, then a :class:`ConvBNAct`.

    The four sub-images are concatenated in YOLOX's order: top-left ``x[..., ::2, ::2]``, bottom-left
    ``x[..., 1::2, ::2]``, top-right ``x[..., ::2, 1::2]``, bottom-right ``x[..., 1::2, 1::2]`` -- the order
    fixes the channel layout of ``conv``'s weight, so YOLOX checkpoints only load with this order.

    Shapes: (B, C_in, H, W) with even H, W -> (B, C_out, H / 2, W / 2) for ``stride=1``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 norm: NormLayer = nn.BatchNorm2d, act: ActLayer | None = nn.SiLU) -> None:
        super().__init__()
        self.conv = ConvBNAct(in_channels * 4, out_channels, kernel_size, stride, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            raise ValueError(f"Focus needs an even input height and width, got {tuple(x.shape[-2:])}")
        x = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], dim=1)
        return self.conv(x)


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling block (YOLOX ``SPPBottleneck``, YOLOv3-SPP).

    ``conv1`` 1x1 to ``in_channels // 2`` -> concat [x, maxpool_k(x) for k in ``kernel_sizes``] (stride 1,
    same padding) -> ``conv2`` 1x1 to ``out_channels``. Pools live in ``m`` (an ``nn.ModuleList``).

    Shapes: (B, C_in, H, W) -> (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int] = (5, 9, 13),
                 norm: NormLayer = nn.BatchNorm2d, act: ActLayer | None = nn.SiLU) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = ConvBNAct(in_channels, hidden, 1, 1, norm=norm, act=act)
        self.m = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv2 = ConvBNAct(hidden * (len(kernel_sizes) + 1), out_channels, 1, 1, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.m], dim=1))


def _fold(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Conv2d:
    """A new Conv2d (with bias) computing ``bn(conv(x))`` with ``bn`` in eval mode (running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fuse_conv_bn: BatchNorm without running statistics (track_running_stats=False) "
                         "cannot be folded into a conv")
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                      padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        # Compute in float64 so the folded weights match the unfused graph to float32 rounding.
        w = conv.weight.double()
        gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(bn.running_var, dtype=torch.float64)
        beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(bn.running_var, dtype=torch.float64)
        scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
        b = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        fused.weight.copy_((w * scale.reshape(-1, 1, 1, 1)).to(conv.weight.dtype))
        fused.bias.copy_((beta + (b - bn.running_mean.double()) * scale).to(conv.weight.dtype))
    fused.weight.requires_grad_(conv.weight.requires_grad)
    return fused


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm into the conv before it, in place, for inference. Returns ``model``.

    Applies to every submodule that has a ``conv`` (``nn.Conv2d``) and a ``bn`` (``nn.BatchNorm2d``)
    attribute -- :class:`ConvBNAct` and everything built from it (DWConv, Focus, SPP, blocks, CSP stages,
    CSPNet, and detector parts built from ConvBNAct). ``conv`` is replaced by a biased conv and ``bn`` by
    ``nn.Identity``, so the forward is ``act(conv(x))`` (one op fewer per unit).

    The folded model reproduces the unfused model **in eval mode** (running statistics); BN can no longer
    be trained afterwards, so fuse only a copy meant for inference/export. Calling it twice is harmless.
    """
    for module in model.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.modules.batchnorm._BatchNorm):
            module.conv = _fold(conv, bn)
            module.bn = nn.Identity()
    return model
