"""Tests for cspdet/models/layers.py: ConvBNAct, YOLOX BN, DWConv, Focus, SPPBottleneck, fuse_conv_bn."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from weights_helpers import randomize_bn  # tests/weights_helpers.py
from cspdet.models import (
    ConvBNAct,
    DWConv,
    Focus,
    SPPBottleneck,
    YoloxBatchNorm2d,
    cspdarknet,
    csp_resnext50_32x4d,
    fuse_conv_bn,
)


def test_conv_bn_act_structure_and_shapes():
    layer = ConvBNAct(8, 16, kernel_size=3, stride=2)
    assert isinstance(layer.conv, nn.Conv2d) and layer.conv.bias is None
    assert layer.conv.padding == (1, 1) and layer.conv.stride == (2, 2)
    assert isinstance(layer.bn, nn.BatchNorm2d) and isinstance(layer.act, nn.SiLU)
    assert layer(torch.randn(2, 8, 15, 16)).shape == (2, 16, 8, 8)
    # act=None is a linear unit; groups reach the conv
    linear = ConvBNAct(8, 8, 1, groups=4, act=None)
    assert isinstance(linear.act, nn.Identity) and linear.conv.groups == 4


def test_conv_bn_act_matches_functional_definition():
    layer = randomize_bn(ConvBNAct(3, 5, 3, act=nn.ReLU)).eval()
    x = torch.randn(1, 3, 9, 9)
    ref = F.relu(F.batch_norm(F.conv2d(x, layer.conv.weight, padding=1), layer.bn.running_mean,
                              layer.bn.running_var, layer.bn.weight, layer.bn.bias, eps=layer.bn.eps))
    torch.testing.assert_close(layer(x), ref)


def test_yolox_batchnorm_defaults():
    bn = YoloxBatchNorm2d(4)
    assert isinstance(bn, nn.BatchNorm2d) and bn.eps == 1e-3 and bn.momentum == 0.03
    assert set(bn.state_dict()) == set(nn.BatchNorm2d(4).state_dict())
    layer = ConvBNAct(3, 4, norm=YoloxBatchNorm2d)
    assert layer.bn.eps == 1e-3 and layer.bn.momentum == 0.03


def test_dwconv_is_depthwise_then_pointwise():
    layer = DWConv(8, 16, kernel_size=3, stride=2)
    assert layer.dconv.conv.groups == 8 and layer.dconv.conv.out_channels == 8
    assert layer.dconv.conv.stride == (2, 2) and layer.pconv.conv.kernel_size == (1, 1)
    assert {k.split(".")[0] for k in layer.state_dict()} == {"dconv", "pconv"}
    assert layer(torch.randn(1, 8, 16, 16)).shape == (1, 16, 8, 8)


def test_focus_slice_order_matches_yolox():
    # A 1x1 identity conv with an identity BN exposes the space-to-depth channel order directly.
    focus = Focus(1, 4, kernel_size=1, act=None).eval()
    with torch.no_grad():
        focus.conv.conv.weight.copy_(torch.eye(4).reshape(4, 4, 1, 1))
    x = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)
    y = focus(x)
    assert y.shape == (1, 4, 4, 4)
    expected = [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]]
    for c, ref in enumerate(expected):
        torch.testing.assert_close(y[:, c:c + 1], ref, atol=1e-4, rtol=1e-4)  # BN eps scales by ~1-5e-6


def test_focus_shapes_and_odd_input():
    focus = Focus(3, 32, kernel_size=3)
    assert focus.conv.conv.in_channels == 12
    assert focus(torch.randn(2, 3, 64, 48)).shape == (2, 32, 32, 24)
    with pytest.raises(ValueError, match="even input height and width"):
        focus(torch.randn(1, 3, 63, 64))


def test_spp_bottleneck_matches_manual_computation():
    spp = randomize_bn(SPPBottleneck(16, 24)).eval()
    assert spp.conv1.conv.out_channels == 8 and spp.conv2.conv.in_channels == 32
    assert [m.kernel_size for m in spp.m] == [5, 9, 13]
    x = torch.randn(1, 16, 20, 20)
    h = spp.conv1(x)
    ref = spp.conv2(torch.cat([h] + [F.max_pool2d(h, k, 1, k // 2) for k in (5, 9, 13)], 1))
    out = spp(x)
    assert out.shape == (1, 24, 20, 20)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("builder", [lambda: cspdarknet(0.33, 0.25, depthwise=True),
                                     lambda: csp_resnext50_32x4d(num_classes=7)], ids=["cspdarknet_nano", "resnext"])
def test_fuse_conv_bn_equivalence(builder):
    torch.manual_seed(0)
    model = randomize_bn(builder()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        fused = fuse_conv_bn(copy.deepcopy(model))
        out = fused(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert all(m.bias is not None for m in fused.modules() if isinstance(m, nn.Conv2d))
    refs, outs = (ref, out) if isinstance(ref, torch.Tensor) else (torch.cat([r.flatten() for r in ref]),
                                                                    torch.cat([o.flatten() for o in out]))
    scale = refs.abs().max().item()
    assert (refs - outs).abs().max().item() <= 1e-4 * max(1.0, scale)
    # fusing again changes nothing
    with torch.no_grad():
        again = fuse_conv_bn(fused)(x)
    again = again if isinstance(again, torch.Tensor) else torch.cat([a.flatten() for a in again])
    torch.testing.assert_close(again, outs)


def test_fuse_conv_bn_rejects_bn_without_running_stats():
    layer = ConvBNAct(3, 4, norm=lambda c: nn.BatchNorm2d(c, track_running_stats=False))
    with pytest.raises(ValueError, match="running statistics"):
        fuse_conv_bn(layer)
