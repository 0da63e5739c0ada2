"""Tests for cspdet/models/blocks.py: the three bottlenecks and the block constructor contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cspdet.models import CSPStage, DarknetBottleneck, DWConv, ResNetBottleneck, ResNeXtBottleneck


def test_resnet_bottleneck_layout():
    block = ResNetBottleneck(64, 64)
    assert block.conv1.conv.out_channels == 32  # bottle_ratio 0.5
    assert block.conv2.conv.kernel_size == (3, 3) and block.conv2.conv.groups == 1
    assert block.conv3.conv.out_channels == 64 and isinstance(block.conv3.act, nn.Identity)  # linear before add
    assert isinstance(block.shortcut, nn.Identity) and isinstance(block.act, nn.ReLU)
    assert block(torch.randn(2, 64, 8, 8)).shape == (2, 64, 8, 8)


def test_resnet_bottleneck_residual_and_projection():
    block = ResNetBottleneck(16, 16).eval()
    with torch.no_grad():  # silence the residual branch: the block reduces to act(x)
        block.conv3.bn.weight.zero_()
        block.conv3.bn.bias.zero_()
    x = torch.randn(1, 16, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(x))
    proj = ResNetBottleneck(16, 32)
    assert isinstance(proj.shortcut, nn.Module) and proj.shortcut.conv.out_channels == 32
    assert proj(x).shape == (1, 32, 6, 6)


def test_resnext_bottleneck_is_grouped():
    block = ResNeXtBottleneck(128, 128)
    assert block.conv2.conv.groups == 32 and block.conv1.conv.out_channels == 128  # bottle_ratio 1.0
    assert block(torch.randn(1, 128, 4, 4)).shape == (1, 128, 4, 4)
    with pytest.raises(ValueError, match="not divisible by groups=32"):
        ResNeXtBottleneck(48, 48)


def test_darknet_bottleneck_yolox_semantics():
    block = DarknetBottleneck(32, 32, bottle_ratio=1.0)
    assert block.conv1.conv.out_channels == 32 and block.conv2.conv.kernel_size == (3, 3)
    assert block.use_add
    assert not DarknetBottleneck(32, 32, shortcut=False).use_add
    assert not DarknetBottleneck(16, 32).use_add  # residual only when in == out
    assert DarknetBottleneck(16, 32)(torch.randn(1, 16, 5, 5)).shape == (1, 32, 5, 5)
    dw = DarknetBottleneck(32, 32, bottle_ratio=1.0, depthwise=True)
    assert isinstance(dw.conv2, DWConv) and dw.conv2.dconv.conv.groups == 32
    assert any(k.startswith("conv2.dconv.") for k in dw.state_dict())


def test_darknet_bottleneck_adds_input():
    block = DarknetBottleneck(8, 8).eval()
    with torch.no_grad():  # conv2 outputs act(0) = 0, so the block is the identity
        block.conv2.bn.weight.zero_()
        block.conv2.bn.bias.zero_()
    x = torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("cls", [ResNetBottleneck, DarknetBottleneck])
def test_bad_bottle_ratio(cls):
    with pytest.raises(ValueError, match="bottle_ratio must be > 0"):
        cls(8, 8, bottle_ratio=0.0)


def test_blocks_use_given_norm_and_act():
    for cls in (ResNetBottleneck, ResNeXtBottleneck, DarknetBottleneck):
        block = cls(64, 64, norm=lambda c: nn.GroupNorm(4, c), act=nn.Hardswish)
        assert all(not isinstance(m, nn.BatchNorm2d) for m in block.modules())
        assert any(isinstance(m, nn.Hardswish) for m in block.modules())
        assert block(torch.randn(1, 64, 4, 4)).shape == (1, 64, 4, 4)


class UserBlock(nn.Module):
    """A user's own block following the documented contract (in, out, norm=, act=, **kwargs)."""

    def __init__(self, in_channels: int, out_channels: int, *, norm, act, scale: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = norm(out_channels)
        self.act = act()
        self.scale = scale

    def forward(self, x):
        return x + self.scale * self.act(self.bn(self.conv(x)))


def test_user_block_satisfies_contract():
    stage = CSPStage(16, 32, 2, UserBlock, block_kwargs=dict(scale=0.5), act=nn.ReLU)
    assert all(isinstance(b, UserBlock) and b.scale == 0.5 for b in stage.blocks)
    assert stage.blocks[0].conv.in_channels == stage.block_channels == 16
    assert stage(torch.randn(1, 16, 8, 8)).shape == (1, 32, 8, 8)
