"""Tests for cspdet/models/elan_blocks.py, elan_backbone.py, elan_pan.py and yolov8_layout.py: ELAN stages, SPPF, the
C2f backbone and PAN, the YOLOv8 layout."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from weights_helpers import randomize_bn  # tests/weights_helpers.py
from cspdet.models import (
    SPPF,
    C2fNet,
    C2fPAN,
    C2fStage,
    C3k,
    C3k2Stage,
    ConvBottleneck,
    CSPNet,
    CSPStage,
    Detector,
    ResNetBottleneck,
    SPPBottleneck,
    TaskAlignedHead,
    YoloxBatchNorm2d,
    csp_resnet50,
    fuse_conv_bn,
    yolov8_channels,
    yolov8_layout,
)
from cspdet.models.info import count_parameters

# Published parameter counts (80 classes) of YOLOv8's model definitions; they count the 16 fixed DFL weights.
YOLOV8N_PARAMS = 3_157_200
YOLOV8S_PARAMS = 11_166_560


def test_conv_bottleneck_is_two_3x3_with_optional_residual():
    block = ConvBottleneck(16, 16)
    assert block.conv1.conv.kernel_size == (3, 3) and block.conv2.conv.kernel_size == (3, 3)
    assert block.conv1.conv.out_channels == 16 and block.use_add  # bottle_ratio 1.0 (C2f's)
    assert ConvBottleneck(16, 16, bottle_ratio=0.5).conv1.conv.out_channels == 8
    assert not ConvBottleneck(16, 16, shortcut=False).use_add and not ConvBottleneck(8, 16).use_add
    block.eval()
    with torch.no_grad():  # a silenced branch leaves the identity
        block.conv2.bn.weight.zero_()
        block.conv2.bn.bias.fill_(-50.0)  # SiLU(-50) ~ 0
    x = torch.randn(1, 16, 5, 5)
    torch.testing.assert_close(block(x), x, atol=1e-6, rtol=0)


def test_c2f_concat_holds_both_halves_and_every_block_output():
    stage = C2fStage(12, 20, num_blocks=3, stride=2, down_channels=16).eval()
    assert stage.down.conv.stride == (2, 2) and stage.expand.conv.in_channels == 16
    c = stage.block_channels
    assert c == 10 and stage.expand.conv.out_channels == 2 * c and stage.fuse.conv.in_channels == (2 + 3) * c
    seen = {}

    def record(key):
        def hook(module, inputs, output):  # returns None: a forward hook's return value would replace the output
            seen[key] = (inputs[0], output)
        return hook

    stage.fuse.register_forward_hook(record("cat"))
    for i, block in enumerate(stage.blocks):
        block.register_forward_hook(record(i))
    x = torch.randn(2, 12, 16, 16)
    y = stage(x)
    assert y.shape == (2, 20, 8, 8)
    cat = seen["cat"][0]
    halves = stage.expand(stage.down(x)).chunk(2, 1)
    torch.testing.assert_close(cat[:, :c], halves[0])  # the untouched half
    torch.testing.assert_close(cat[:, c : 2 * c], halves[1])  # the half the blocks chain on
    for i in range(3):
        block_in, block_out = seen[i]
        torch.testing.assert_close(block_in, cat[:, (1 + i) * c : (2 + i) * c])  # chained on the previous output
        torch.testing.assert_close(block_out, cat[:, (2 + i) * c : (3 + i) * c])  # ... and every output joins


def test_c2f_takes_any_block_fn_and_rejects_bad_arguments():
    stage = C2fStage(16, 32, 2, ResNetBottleneck, block_kwargs=dict(bottle_ratio=0.5), act=nn.ReLU)
    assert all(isinstance(b, ResNetBottleneck) for b in stage.blocks)
    assert stage(torch.randn(1, 16, 8, 8)).shape == (1, 32, 8, 8)
    with pytest.raises(ValueError, match="num_blocks"):
        C2fStage(16, 32, 0)
    with pytest.raises(ValueError, match="expansion"):
        C2fStage(16, 1, 1, expansion=0.5)


def test_c3k_is_a_csp_block_and_c3k2_variants():
    # C3k follows the block contract, so a plain CSPStage can stack it.
    outer = CSPStage(16, 16, 2, C3k, block_kwargs=dict(num_blocks=1))
    assert isinstance(outer.blocks[0], C3k) and outer(torch.randn(1, 16, 8, 8)).shape == (1, 16, 8, 8)
    c3k = C3k(8, 8)
    assert len(c3k.blocks) == 2 and all(isinstance(b, ConvBottleneck) for b in c3k.blocks)
    assert c3k.expand.conv.out_channels == 8 and c3k.block_channels == 4  # C3: two 1x1 to c/2, stacked

    plain = C3k2Stage(32, 32, 2)  # c3k=False: 3x3/3x3 bottlenecks at half width
    assert all(isinstance(b, ConvBottleneck) and b.conv1.conv.out_channels == 8 for b in plain.blocks)
    deep = C3k2Stage(32, 64, 1, c3k=True, stride=2, down_channels=32)
    assert isinstance(deep.blocks[0], C3k) and deep.blocks[0].blocks[0].conv2.conv.kernel_size == (3, 3)
    assert deep(torch.randn(1, 32, 16, 16)).shape == (1, 64, 8, 8)
    # YOLO11 n's first C3k2 (256 x 0.25 = 64 out from 32 in, e = 0.25, no c3k): 6,640 parameters.
    assert count_parameters(C3k2Stage(32, 64, 1, expansion=0.25)) == 6_640


def test_sppf_equals_spp_5_9_13_with_the_same_weights():
    sppf = randomize_bn(SPPF(16, 24)).eval()
    spp = SPPBottleneck(16, 24, kernel_sizes=(5, 9, 13), norm=YoloxBatchNorm2d).eval()
    spp.load_state_dict({k.replace("pool.", "m."): v for k, v in sppf.state_dict().items()})
    x = torch.randn(2, 16, 13, 13)
    torch.testing.assert_close(sppf(x), spp(x))
    assert count_parameters(sppf) == count_parameters(spp)


def test_c2f_net_features_and_yolov8n_backbone_widths():
    det = yolov8_layout()  # YOLOv8n
    bb = det.backbone
    assert yolov8_channels(0.25) == [16, 32, 64, 128, 256] and yolov8_channels(0.75, 768) == [48, 96, 192, 384, 576]
    assert bb.out_channels == [64, 128, 256] and bb.out_strides == [8, 16, 32]
    assert [len(s.blocks) for s in bb.stages] == [1, 2, 2, 1]  # n(3, 6, 6, 3) at depth 0.33
    assert all(b.use_add for s in bb.stages for b in s.blocks)  # backbone C2f blocks are residual
    assert isinstance(bb.sppf, SPPF)
    feats = bb(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 8, 12), (128, 4, 6), (256, 2, 3)]
    # The neck: C2f without residual, plain nearest upsampling, no lateral convs.
    neck = det.neck
    assert all(not b.use_add for s in [*neck.top_down_stages, *neck.bottom_up_stages] for b in s.blocks)
    assert neck.upsample.mode == "nearest" and not hasattr(neck, "lateral_convs")
    assert [s.fuse.conv.out_channels for s in neck.top_down_stages] == [64, 128]
    assert [s.fuse.conv.out_channels for s in neck.bottom_up_stages] == [128, 256]


def test_c2f_net_with_c3k2_stages_yolo11_style():
    # YOLO11's backbone skeleton (without its C2PSA attention): C3k2 stages, e = 0.25 in the shallow two.
    bb = C2fNet([(1, 32), (1, 64), (1, 64), (1, 128)], 8, stage_fn=C3k2Stage,
                stage_kwargs=[dict(expansion=0.25), dict(expansion=0.25), dict(c3k=True), dict(c3k=True)],
                out_indices=(2, 3, 4))
    assert isinstance(bb.stages[3].blocks[0], C3k) and isinstance(bb.stages[0].blocks[0], ConvBottleneck)
    assert bb.out_channels == [64, 64, 128] and bb.out_strides == [8, 16, 32]
    assert [tuple(f.shape[1:]) for f in bb(torch.randn(1, 3, 64, 64))] == [(64, 8, 8), (64, 4, 4), (128, 2, 2)]
    with pytest.raises(ValueError, match="out_indices"):
        C2fNet([(1, 16)], 8, out_indices=(5,))


def test_yolov8_parameter_counts_are_the_published_ones():
    n = yolov8_layout(0.33, 0.25, 80)
    assert count_parameters(n) == YOLOV8N_PARAMS
    # The 16 DFL bin values are a frozen parameter, so the optimiser never sees them.
    assert count_parameters(n, trainable_only=True) == YOLOV8N_PARAMS - 16
    assert count_parameters(yolov8_layout(0.33, 0.50, 80)) == YOLOV8S_PARAMS
    # The one-to-one branch doubles exactly the per-level head branches.
    n2 = yolov8_layout(one2one=True)
    assert count_parameters(n2) - YOLOV8N_PARAMS == count_parameters(n.head.levels)


def test_neck_is_fed_by_any_cspnet_backbone():
    tiny = CSPNet(stem_channels=8, num_classes=0, features_only=True, stage_defs=[
        (1, 16, ResNetBottleneck, True), (1, 24, ResNetBottleneck, True), (1, 32, ResNetBottleneck, True),
        (1, 48, ResNetBottleneck, True)])
    resnet = csp_resnet50(features_only=True, num_classes=0)
    for backbone in (tiny, resnet):
        neck = C2fPAN(backbone.out_channels, [16, 32, 64])
        det = Detector(backbone, neck, TaskAlignedHead(3, neck.out_channels, backbone.out_strides)).eval()
        with torch.no_grad():
            out = det(torch.rand(1, 3, 64, 64) * 255)
        assert out.shape == (1, 8 * 8 + 4 * 4 + 2 * 2, 5 + 3)
        assert len(det.predict(torch.rand(1, 3, 64, 64) * 255, conf=0.0)) == 1


def test_neck_levels_and_gradients():
    neck = C2fPAN([8, 16, 32, 64], num_blocks=2)
    feats = [torch.randn(2, c, 64 // s, 64 // s, requires_grad=True) for c, s in zip([8, 16, 32, 64], [4, 8, 16, 32])]
    outs = neck(feats)
    assert [tuple(o.shape[1:]) for o in outs] == [(8, 16, 16), (16, 8, 8), (32, 4, 4), (64, 2, 2)]
    sum(o.sum() for o in outs).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)
    c3k2 = C2fPAN([16, 32, 64], stage_fn=C3k2Stage, stage_kwargs=dict(c3k=True))
    assert isinstance(c3k2.top_down_stages[0].blocks[0], C3k)
    with pytest.raises(ValueError, match="levels"):
        C2fPAN([16])
    with pytest.raises(ValueError, match="feature maps"):
        neck(feats[:3])


@pytest.mark.parametrize("reg_max,one2one", [(16, False), (16, True), (1, True)])
def test_fused_equals_unfused(reg_max, one2one):
    det = randomize_bn(yolov8_layout(0.33, 0.125, 5, reg_max=reg_max, one2one=one2one)).eval()
    fused = fuse_conv_bn(copy.deepcopy(det))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    x = torch.rand(2, 3, 96, 64) * 255
    for nms_free in (False, True) if one2one else (False,):
        det.head.nms_free = fused.head.nms_free = nms_free
        with torch.no_grad():
            torch.testing.assert_close(fused(x), det(x), rtol=1e-4, atol=1e-3)
        a, b = det.predict(x, conf=0.0, max_det=20), fused.predict(x, conf=0.0, max_det=20)
        for ra, rb in zip(a, b):
            torch.testing.assert_close(ra["scores"], rb["scores"], rtol=1e-4, atol=1e-5)
