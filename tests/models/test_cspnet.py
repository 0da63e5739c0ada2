"""Tests for cspdet/models/cspnet.py: CSPStage, CSPNet (API, shapes, errors), presets and YOLOX parity."""

from __future__ import annotations

import doctest
import functools
import importlib
import importlib.util
import inspect
import os
import re
import sys
import types

import pytest
import torch
from torch import nn

import cspdet.models.cspnet as cspnet_module
from weights_helpers import randomize_bn  # tests/weights_helpers.py
from cspdet.models import (
    CSPDARKNET_SIZES,
    ConvBNAct,
    CSPNet,
    CSPStage,
    DarknetBottleneck,
    DWConv,
    ResNetBottleneck,
    ResNeXtBottleneck,
    SPPBottleneck,
    YoloxBatchNorm2d,
    csp_darknet53,
    csp_resnet50,
    csp_resnext50_32x4d,
    cspdarknet,
    timm_to_cspdet_key,
)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ CSPStage

@pytest.mark.parametrize("ratio, block, shortcut", [(0.25, 16, 48), (0.5, 32, 32), (0.75, 48, 16)])
def test_stage_split_ratio_channel_counts(ratio, block, shortcut):
    stage = CSPStage(32, 64, 1, DarknetBottleneck, split_ratio=ratio)
    assert (stage.expand_channels, stage.block_channels, stage.shortcut_channels) == (64, block, shortcut)
    assert stage.blocks[0].conv1.conv.in_channels == block and stage.blocks[0].conv2.conv.out_channels == block
    assert stage.fuse.conv.in_channels == 64 and stage.fuse.conv.out_channels == 64
    assert stage(torch.randn(1, 32, 8, 8)).shape == (1, 64, 8, 8)


@pytest.mark.parametrize("blocks_first", [False, True])
def test_stage_split_and_concat_order(blocks_first):
    torch.manual_seed(0)
    stage = randomize_bn(CSPStage(16, 24, 2, DarknetBottleneck, stride=2, down_channels=20, transition_b=True,
                                  expand_channels=32, split_ratio=0.25, blocks_first=blocks_first)).eval()
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        e = stage.expand(stage.down(x))
        cb = stage.block_channels
        assert cb == 8
        xb, xs = (e[:, :cb], e[:, cb:]) if blocks_first else (e[:, -cb:], e[:, :-cb])
        yb = stage.transition_b(stage.blocks(xb))
        ref = stage.fuse(torch.cat([yb, xs] if blocks_first else [xs, yb], 1))
        out = stage(x)
    assert out.shape == (1, 24, 4, 4)
    torch.testing.assert_close(out, ref)


def test_stage_optional_parts():
    plain = CSPStage(16, 32, 1, DarknetBottleneck)
    assert isinstance(plain.down, nn.Identity) and isinstance(plain.spp, nn.Identity)
    assert isinstance(plain.transition_b, nn.Identity) and isinstance(plain.expand, ConvBNAct)
    full = CSPStage(16, 32, 1, DarknetBottleneck, stride=2, down_channels=32, depthwise_down=True, spp=True,
                    linear_expand=True, transition_b=True)
    assert isinstance(full.down, DWConv) and full.down.dconv.conv.stride == (2, 2)
    assert isinstance(full.spp, SPPBottleneck) and isinstance(full.expand.act, nn.Identity)
    assert isinstance(full.transition_b, ConvBNAct)
    grouped = CSPStage(64, 64, 1, ResNeXtBottleneck, stride=2, down_groups=32)
    assert grouped.down.conv.groups == 32 and grouped.down.conv.out_channels == 64  # D defaults to in_channels
    no_expand = CSPStage(16, 32, 1, DarknetBottleneck, down_channels=32, down_kernel_size=1, expand=False)
    assert isinstance(no_expand.expand, nn.Identity) and no_expand.expand_channels == 32
    assert no_expand.down.conv.kernel_size == (1, 1)


def test_stage_equals_two_parallel_convs():
    """YOLOX CSPLayer's conv1/conv2 pair is one expand conv to 2*hidden split in two (same parameters)."""
    torch.manual_seed(0)
    stage = randomize_bn(CSPStage(32, 64, 1, DarknetBottleneck, blocks_first=True,
                                  block_kwargs=dict(bottle_ratio=1.0, shortcut=False))).eval()
    conv1, conv2 = ConvBNAct(32, 32), ConvBNAct(32, 32)
    with torch.no_grad():
        for dst, sl in ((conv1, slice(0, 32)), (conv2, slice(32, 64))):
            dst.conv.weight.copy_(stage.expand.conv.weight[sl])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(dst.bn, name).copy_(getattr(stage.expand.bn, name)[sl])
        conv1.eval(), conv2.eval()
        x = torch.randn(1, 32, 8, 8)
        ref = stage.fuse(torch.cat([stage.blocks(conv1(x)), conv2(x)], 1))
        torch.testing.assert_close(stage(x), ref)
    assert num_params(stage.expand) == num_params(conv1) + num_params(conv2)


def test_stage_errors():
    with pytest.raises(ValueError, match="num_blocks must be an integer >= 1"):
        CSPStage(16, 32, 0)
    with pytest.raises(ValueError, match=r"split_ratio must be in \(0, 1\)"):
        CSPStage(16, 32, 1, split_ratio=1.0)
    with pytest.raises(ValueError, match="cannot split 30 channels"):
        CSPStage(16, 30, 1, split_ratio=0.25)
    with pytest.raises(ValueError, match="down_groups=32 must divide"):
        CSPStage(16, 32, 1, stride=2, down_groups=32)


# ------------------------------------------------------------------------------------------------ CSPNet API

SMALL = dict(stem_channels=16)


def small_defs(block):
    return [(1, 32, block, True), (1, 64, block, True), (2, 128, block, True), (1, 256, block, True)]


@pytest.mark.parametrize("block, cls", [
    (ResNetBottleneck, ResNetBottleneck),
    (functools.partial(ResNeXtBottleneck, groups=8), ResNeXtBottleneck),  # 16-channel branches: 8 groups
    (DarknetBottleneck, DarknetBottleneck),
], ids=["resnet", "resnext", "darknet"])
def test_custom_stage_defs_shapes(block, cls):
    model = CSPNet(stage_defs=small_defs(block), num_classes=7, **SMALL)
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 7)
    assert model.forward_features(x).shape == (2, 256, 2, 2)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 256)
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16, 32]
    assert [f["num_chs"] for f in model.feature_info] == [16, 32, 64, 128, 256]
    assert [tuple(f.shape) for f in model.forward_multiscale(x)] == [(2, 64, 8, 8), (2, 128, 4, 4), (2, 256, 2, 2)]
    assert model.out_channels == [64, 128, 256] and model.out_strides == [8, 16, 32]
    assert all(isinstance(b, cls) for s in model.stages for b in s.blocks)


def test_default_stage_layout_follows_issue():
    """Each stage: pre-conv (pre_kernel_size, stride 2 iff downsample) -> split -> blocks -> concat -> 1x1."""
    model = CSPNet(stage_defs=[(1, 32, DarknetBottleneck, False), (1, 64, DarknetBottleneck, True)],
                   pre_kernel_size=3, num_classes=3, **SMALL)
    s0, s1 = model.stages
    assert s0.down.conv.stride == (1, 1) and s1.down.conv.stride == (2, 2)
    assert s0.down.conv.kernel_size == (3, 3) and s1.down.conv.out_channels == 64
    assert isinstance(s0.expand, nn.Identity) and isinstance(s0.transition_b, nn.Identity)
    assert s0.fuse.conv.kernel_size == (1, 1)
    default = CSPNet(stage_defs=[(1, 32, DarknetBottleneck, True)], **SMALL)
    assert default.stages[0].down.conv.kernel_size == (1, 1)  # pre_kernel_size defaults to 1


def test_signature_is_the_documented_one():
    """Issue 3 fixes the positional parameters and their defaults; extras must be keyword-only."""
    params = list(inspect.signature(CSPNet.__init__).parameters.values())[1:]
    positional = [(p.name, p.default) for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == [
        ("in_channels", 3), ("stem_channels", 64), ("stage_defs", None), ("num_classes", 1000),
        ("norm", nn.BatchNorm2d), ("act", nn.ReLU), ("split_ratio", 0.5), ("global_pool", "avg"),
        ("dropout", 0.0), ("feature_channels", None), ("pre_kernel_size", 1),
    ]
    assert all(p.kind is p.KEYWORD_ONLY for p in params[len(positional):])


class OwnBlock(nn.Module):
    """A user block with the documented constructor contract, used through ``stage_defs``."""

    def __init__(self, in_channels: int, out_channels: int, *, norm, act) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = norm(out_channels)
        self.act = act()

    def forward(self, x):
        return x + self.act(self.bn(self.conv(x)))


def test_user_block_class_in_stage_defs():
    model = CSPNet(stage_defs=small_defs(OwnBlock), num_classes=3, split_ratio=0.25, act=nn.SiLU, **SMALL)
    blocks = [b for s in model.stages for b in s.blocks]
    assert len(blocks) == 5 and all(isinstance(b, OwnBlock) and isinstance(b.act, nn.SiLU) for b in blocks)
    assert [b.conv.in_channels for b in blocks] == [8, 16, 32, 32, 64]  # a quarter of each stage width
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_default_constructor():
    model = CSPNet()
    assert model.num_classes == 1000 and len(model.stages) == 4
    assert isinstance(model.stem.conv.act, nn.ReLU)
    assert model.out_strides == [8, 16, 32]
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_split_ratio_channel_counts(ratio):
    model = CSPNet(stage_defs=small_defs(DarknetBottleneck), split_ratio=ratio, num_classes=4, **SMALL)
    for stage, width in zip(model.stages, (32, 64, 128, 256)):
        assert stage.block_channels == int(width * ratio)
        assert stage.shortcut_channels == width - int(width * ratio)
        assert stage.blocks[0].conv1.conv.in_channels == int(width * ratio)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)


def test_gradients_reach_the_stem():
    model = CSPNet(stage_defs=small_defs(ResNetBottleneck), num_classes=5, **SMALL)
    model(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()
    grad = model.stem.conv.conv.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_head_options():
    x = torch.randn(2, 3, 64, 64)
    model = CSPNet(stage_defs=small_defs(DarknetBottleneck), num_classes=6, feature_channels=96, global_pool="max",
                   dropout=0.2, **SMALL)
    assert isinstance(model.head.feature, ConvBNAct) and model.head.feature.conv.out_channels == 96
    assert isinstance(model.head.global_pool, nn.AdaptiveMaxPool2d) and model.head.drop.p == 0.2
    assert model.num_features == 96 and model.get_classifier().in_features == 96
    model.eval()
    feats = model.forward_features(x)
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True),
                               model.head.feature(feats).amax(dim=(2, 3)))
    model.reset_classifier(3, global_pool="avg")
    assert model(x).shape == (2, 3) and model.num_classes == 3
    assert isinstance(model.head.global_pool, nn.AdaptiveAvgPool2d)
    model.reset_classifier(0)
    assert model(x).shape == (2, 96)


def test_features_only_mode():
    model = CSPNet(stage_defs=small_defs(DarknetBottleneck), features_only=True, out_indices=(0, 2, 4), **SMALL)
    assert model.head is None and model.out_channels == [16, 64, 256] and model.out_strides == [2, 8, 32]
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 32, 32), (1, 64, 8, 8), (1, 256, 2, 2)]
    with pytest.raises(RuntimeError, match="features_only"):
        model.forward_head(outs[-1])
    assert not any(k.startswith("head.") for k in model.state_dict())


@pytest.mark.parametrize("kwargs, message", [
    (dict(split_ratio=0.0), r"split_ratio must be in \(0, 1\)"),
    (dict(split_ratio=1.5), r"split_ratio must be in \(0, 1\)"),
    (dict(global_pool="sum"), "global_pool must be 'avg' or 'max'"),
    (dict(stage_defs=[(0, 32, DarknetBottleneck, True)]), r"stage_defs\[0\]: num_blocks must be an integer >= 1"),
    (dict(stage_defs=[(1, 32, DarknetBottleneck, True), (1, 30, DarknetBottleneck, True)], split_ratio=0.25),
     r"stage_defs\[1\].*split_ratio=0.25 cannot split 30 channels"),
    (dict(stage_defs=[(1, 32, DarknetBottleneck)]), r"stage_defs\[0\] must be \(num_blocks, out_channels"),
    (dict(stage_defs=[]), "at least one stage"),
    (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    (dict(num_classes=-1), "num_classes must be an integer >= 0"),
    (dict(stem_type="vit"), "stem_type must be one of"),
    (dict(weight_init="xavier"), "weight_init must be 'timm' or 'torch'"),
    (dict(out_indices=(3, 9)), "out_indices must be non-empty indices"),
    (dict(stage_kwargs=dict(spp_size=5)), r"stage_kwargs\[0\]: unknown CSPStage option\(s\) \['spp_size'\]"),
    (dict(stage_kwargs=[{}]), "stage_kwargs has 1 entries but stage_defs has 4 stages"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    kwargs = {"stage_defs": small_defs(DarknetBottleneck), **SMALL, **kwargs}
    with pytest.raises(ValueError, match=message):
        CSPNet(**kwargs)


def test_docstring_example_runs():
    finder = doctest.DocTestFinder()
    tests = [t for t in finder.find(cspnet_module.CSPNet, "CSPNet", globs={}) if t.examples]
    assert tests, "CSPNet docstring lost its example"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


# ------------------------------------------------------------------------------------------------ presets

@pytest.mark.parametrize("builder, expected", [
    (csp_resnet50, 21_616_168),
    (csp_resnext50_32x4d, 20_569_896),
    (csp_darknet53, 27_642_184),
])
def test_timm_preset_parameter_counts_and_shapes(builder, expected):
    model = builder()
    assert num_params(model) == expected
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
        feats = model.forward_multiscale(torch.randn(1, 3, 64, 64))
    assert model.out_strides == [8, 16, 32]
    assert [f.shape[1] for f in feats] == model.out_channels
    assert [f.shape[-1] for f in feats] == [8, 4, 2]


@pytest.mark.parametrize("size, expected", [("s", 4_212_672), ("nano", 459_968), ("l", 27_075_968)])
def test_cspdarknet_parameter_counts(size, expected):
    depth, width, depthwise = CSPDARKNET_SIZES[size]
    assert num_params(cspdarknet(depth, width, depthwise=depthwise)) == expected


@pytest.mark.parametrize("size", list(CSPDARKNET_SIZES))
def test_cspdarknet_features(size):
    depth, width, depthwise = CSPDARKNET_SIZES[size]
    model = cspdarknet(depth, width, depthwise=depthwise).eval()
    base = int(64 * width)
    assert model.features_only and model.out_channels == [4 * base, 8 * base, 16 * base]
    assert model.out_strides == [8, 16, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 4 * base, 8, 8), (1, 8 * base, 4, 4), (1, 16 * base, 2, 2)]


def test_cspdarknet_layout():
    model = cspdarknet(0.33, 0.25, depthwise=True)
    assert isinstance(model.stem, nn.Module) and model.stem.conv.conv.in_channels == 12
    assert all(isinstance(m, YoloxBatchNorm2d) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(isinstance(m, nn.SiLU) for m in model.modules() if isinstance(m, (nn.SiLU, nn.ReLU, nn.LeakyReLU)))
    assert [len(s.blocks) for s in model.stages] == [1, 3, 3, 1]
    assert [isinstance(s.spp, SPPBottleneck) for s in model.stages] == [False, False, False, True]
    assert all(isinstance(s.down, DWConv) and s.blocks_first for s in model.stages)
    assert [s.blocks[0].use_add for s in model.stages] == [True, True, True, False]
    classifier = cspdarknet(0.33, 0.5, act=nn.ReLU, features_only=False, num_classes=10)
    assert classifier(torch.randn(1, 3, 64, 64)).shape == (1, 10)


# ------------------------------------------------------------------------------------------------ initialisation

def _conv_bound(conv: nn.Conv2d) -> float:
    """PyTorch's default conv init is U(-b, b) with b = 1 / sqrt(fan_in) (kaiming_uniform_ with a = sqrt(5))."""
    return 1.0 / (conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]) ** 0.5


def test_timm_style_init_with_zero_init_last():
    torch.manual_seed(0)
    model = CSPNet(stage_defs=[(2, 64, ResNetBottleneck, True), (2, 128, DarknetBottleneck, True)],
                   num_classes=5, **SMALL)
    assert model.weight_init == "timm"
    big = model.stages[1].fuse.conv  # 128 -> 128 1x1: enough samples for a std estimate
    assert big.weight.std().item() == pytest.approx((2.0 / big.out_channels) ** 0.5, rel=0.05)  # kaiming fan-out
    assert model.head.fc.weight.std().item() == pytest.approx(0.01, rel=0.1) and not model.head.fc.bias.any()
    for block in model.stages[0].blocks:  # ResNet blocks: last BN of the residual branch starts at 0
        assert not block.conv3.bn.weight.any() and (block.conv1.bn.weight == 1).all()
    for block in model.stages[1].blocks:  # Darknet blocks: same for their last conv
        assert not block.conv2.bn.weight.any() and (block.conv1.bn.weight == 1).all()
    # A Darknet block without the residual add keeps its scale (zeroing it would make it a constant).
    plain = CSPNet(stage_defs=[(1, 32, DarknetBottleneck, True)], num_classes=2, split_ratio=0.5,
                   stage_kwargs=dict(block_kwargs=dict(shortcut=False)), **SMALL)
    assert (plain.stages[0].blocks[0].conv2.bn.weight == 1).all()


def test_cspdarknet_keeps_pytorch_default_init_like_yolox():
    torch.manual_seed(0)
    model = cspdarknet(0.33, 0.25)
    assert model.weight_init == "torch"
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.abs().max().item() <= _conv_bound(c) for c in convs)
    big = model.stages[3].fuse.conv  # 256 -> 256 1x1
    assert big.weight.std().item() == pytest.approx(_conv_bound(big) / 3 ** 0.5, rel=0.05)  # uniform, not kaiming
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all((m.weight == 1).all() and not m.bias.any() and (m.eps, m.momentum) == (1e-3, 0.03) for m in bns)
    timm_style = cspdarknet(0.33, 0.25, weight_init="timm")
    assert timm_style.stages[3].fuse.conv.weight.std().item() == pytest.approx((2.0 / 256) ** 0.5, rel=0.05)


def test_timm_presets_initialise_like_timm():
    """Same init as ``timm.create_model``: BN scales (incl. zero-init-last) identical, conv stds alike."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = {timm_to_cspdet_key(k): v for k, v in timm.create_model("cspresnet50", pretrained=False).state_dict().items()}
    ours = csp_resnet50().state_dict()
    assert set(ours) == set(ref)
    for key, value in ours.items():
        if key.endswith(("bn.weight", "bn.bias", "running_mean", "running_var")) or key == "head.fc.bias":
            assert torch.equal(value, ref[key]), key
        elif value.dim() > 1 and value.numel() >= 4096:
            assert value.std().item() == pytest.approx(ref[key].std().item(), rel=0.1), key


def test_preset_reductions_match_timm():
    timm = pytest.importorskip("timm")
    for name, builder in (("cspresnet50", csp_resnet50), ("cspdarknet53", csp_darknet53)):
        ref = timm.create_model(name, pretrained=False)
        ours = builder()
        assert [f["reduction"] for f in ours.feature_info[1:]] == [f["reduction"] for f in ref.feature_info[1:]]
        assert [f["num_chs"] for f in ours.feature_info] == [f["num_chs"] for f in ref.feature_info]


# ------------------------------------------------------------------------------------------------ YOLOX parity

def _yolox_darknet():
    """YOLOX's own ``yolox/models/darknet.py`` (installed package), imported without ``yolox/__init__``, whose
    utilities need optional extras (thop) that the backbone does not use."""
    spec = importlib.util.find_spec("yolox")
    if spec is None or spec.origin is None:
        pytest.skip("YOLOX is not installed: reference CSPDarknet unavailable")
    models_dir = os.path.join(os.path.dirname(spec.origin), "models")
    if "_cspdet_yolox_ref" not in sys.modules:
        pkg = types.ModuleType("_cspdet_yolox_ref")
        pkg.__path__ = [models_dir]
        sys.modules["_cspdet_yolox_ref"] = pkg
    return importlib.import_module("_cspdet_yolox_ref.darknet")


def yolox_backbone_to_cspdet(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """YOLOX ``CSPDarknet`` keys -> ``cspdarknet`` keys (the correspondence documented on ``cspdarknet``)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("stem."):
            out[key] = value
            continue
        dark, idx, rest = re.match(r"dark(\d)\.(\d)\.(.*)$", key).groups()
        stage, idx = int(dark) - 2, int(idx)
        prefix = f"stages.{stage}"
        if idx == 0:
            out[f"{prefix}.down.{rest}"] = value
        elif stage == 3 and idx == 1:
            out[f"{prefix}.spp.{rest}"] = value
        elif rest.startswith("m."):
            out[f"{prefix}.blocks.{rest[2:]}"] = value
        elif rest.startswith("conv3."):
            out[f"{prefix}.fuse.{rest[6:]}"] = value
        elif rest.startswith("conv1."):  # block path first (blocks_first=True), then the shortcut path conv2
            other = state_dict[key.replace(".conv1.", ".conv2.", 1)]
            out[f"{prefix}.expand.{rest[6:]}"] = value if value.ndim == 0 else torch.cat([value, other])
        elif not rest.startswith("conv2."):
            raise KeyError(key)
    return out


@pytest.mark.parametrize("size", list(CSPDARKNET_SIZES))
def test_cspdarknet_parameter_count_matches_yolox(size):
    darknet = _yolox_darknet()
    depth, width, depthwise = CSPDARKNET_SIZES[size]
    assert num_params(cspdarknet(depth, width, depthwise=depthwise)) == num_params(
        darknet.CSPDarknet(depth, width, depthwise=depthwise))


@pytest.mark.parametrize("size", ["nano", "s"])
def test_cspdarknet_outputs_match_yolox(size):
    darknet = _yolox_darknet()
    depth, width, depthwise = CSPDARKNET_SIZES[size]
    torch.manual_seed(0)
    ref = darknet.CSPDarknet(depth, width, depthwise=depthwise)
    for m in ref.modules():  # YOLOX's get_model sets these on every BN
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    ref = randomize_bn(ref).eval()
    ours = cspdarknet(depth, width, depthwise=depthwise).eval()
    ours.load_state_dict(yolox_backbone_to_cspdet(ref.state_dict()), strict=True)
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        expected = ref(x)
        got = ours(x)
    for name, tensor in zip(("dark3", "dark4", "dark5"), got):
        assert tensor.shape == expected[name].shape
        assert (tensor - expected[name]).abs().max().item() <= 1e-4 * max(1.0, expected[name].abs().max().item())
