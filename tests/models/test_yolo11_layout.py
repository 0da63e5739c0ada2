"""Tests for cspdet/models/yolo11_layout.py and attention.py: YOLO11's and YOLO26's layouts against their published
parameter counts (whole models and single modules), the attention blocks, and one training step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cspdet.models import (
    SPPF,
    YOLO11_SIZES,
    Attention,
    BottleneckPSA,
    C2fPAN,
    C2PSA,
    C3k,
    C3k2Stage,
    ConvBottleneck,
    Detector,
    PSABlock,
    TaskAlignedHead,
    create_detector,
    yolo11_spec,
    yolo26_layout,
    yolo26_spec,
)
from cspdet.det import Targets
from cspdet.models.info import count_parameters

# Published parameter counts at 80 classes (the model definitions' own summaries; YOLO11's count the 16 fixed DFL
# weights, YOLO26's both head branches).
PUBLISHED = {
    ("11", "n"): 2_624_080, ("11", "s"): 9_458_752, ("11", "m"): 20_114_688, ("11", "l"): 25_372_160,
    ("11", "x"): 56_966_176,
    ("26", "n"): 2_572_280, ("26", "s"): 10_009_784, ("26", "m"): 21_896_248, ("26", "l"): 26_299_704,
    ("26", "x"): 58_993_368,
}


@pytest.mark.parametrize("version,size", list(PUBLISHED))
def test_parameter_counts_are_the_published_ones(version, size):
    depth, width, max_channels = YOLO11_SIZES[size]
    spec_fn = yolo11_spec if version == "11" else yolo26_spec
    with torch.device("meta"):  # layout only: no memory, no init cost for the 59M-parameter x
        model = Detector.from_spec(spec_fn(80, depth, width, max_channels))
    assert count_parameters(model) == PUBLISHED[(version, size)]


def test_module_parameter_counts_match_yolo26n_and_yolo11n():
    # Per-module counts of the published n models (SPPF, C2PSA, the last neck stage, one level's head branches).
    assert count_parameters(SPPF(256, 256, shortcut=True, conv1_act=False)) == 164_608
    assert count_parameters(C2PSA(256, 1)) == 249_728
    assert count_parameters(C3k2Stage(384, 256, 1, c3k=True, attn=True)) == 463_104  # YOLO26n layer 22
    assert count_parameters(C3k2Stage(384, 256, 1, c3k=True)) == 378_880  # YOLO11n layer 22
    y26 = create_detector("yolo26n_layout").head.levels[0]
    assert count_parameters(y26.cls_convs) + count_parameters(y26.cls_pred) == 19_904
    assert count_parameters(y26.box_convs) + count_parameters(y26.box_pred) == 11_652
    y11 = create_detector("yolo11n_layout").head.levels[0]
    assert count_parameters(y11.box_convs) + count_parameters(y11.box_pred) == 78_144


def test_yolo26n_layout_structure():
    det = yolo26_layout()
    bb, neck, head = det.backbone, det.neck, det.head
    assert bb.out_channels == [128, 128, 256] and bb.out_strides == [8, 16, 32]
    assert [s.down.conv.out_channels for s in bb.stages] == [32, 64, 128, 256]  # down convs narrower at first
    assert [type(s.blocks[0]) for s in bb.stages] == [ConvBottleneck, ConvBottleneck, C3k, C3k]
    assert bb.sppf.use_add and isinstance(bb.sppf.conv1.act, nn.Identity) and isinstance(bb.psa, C2PSA)
    assert all(isinstance(s.blocks[0], C3k) for s in [*neck.top_down_stages, neck.bottom_up_stages[0]])
    assert isinstance(neck.bottom_up_stages[1].blocks[0], BottleneckPSA)
    assert head.reg_max == 1 and head.one2one and head.nms_free
    assert isinstance(head.levels[0].cls_convs[0].dconv.conv, nn.Conv2d)
    assert head.levels[0].cls_convs[0].dconv.conv.groups == 64  # depthwise over the neck's P3 channels
    # YOLO11n keeps the plain 3x3 SPPF input path, DFL and NMS, and C3k only in the last neck stage.
    y11 = create_detector("yolo11n_layout")
    assert not y11.backbone.sppf.use_add and isinstance(y11.backbone.sppf.conv1.act, nn.SiLU)
    assert y11.head.reg_max == 16 and not y11.head.one2one
    assert [type(s.blocks[0]) for s in [*y11.neck.top_down_stages, *y11.neck.bottom_up_stages]] == [
        ConvBottleneck, ConvBottleneck, ConvBottleneck, C3k]
    x = torch.rand(1, 3, 96, 64) * 255
    with torch.no_grad():
        assert det.eval()(x).shape == (1, 12 * 8 + 6 * 4 + 3 * 2, 85)


def test_attention_is_global_and_validates_heads():
    torch.manual_seed(0)
    attn = Attention(64, num_heads=2).eval()
    x = torch.randn(1, 64, 8, 8)
    y = attn(x)
    assert y.shape == x.shape and attn.key_dim == 16 and attn.head_dim == 32
    far = x.clone()
    far[..., 0, 0] += 5.0  # a change in one corner reaches the opposite corner (a 3x3 conv stack would not)
    assert (attn(far)[..., 7, 7] - y[..., 7, 7]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="multiple of num_heads"):
        Attention(60, num_heads=8)
    block = PSABlock(64, num_heads=1).eval()
    plain = PSABlock(64, num_heads=1, shortcut=False).eval()
    plain.load_state_dict(block.state_dict())
    with torch.no_grad():
        h = x + block.attn(x)
        torch.testing.assert_close(block(x), h + block.ffn(h))
        assert not torch.allclose(plain(x), block(x))


def test_neck_and_head_options_are_checked():
    with pytest.raises(ValueError, match="stage_overrides needs one mapping per stage"):
        C2fPAN([16, 32, 64], stage_fn="c3k2", stage_overrides=[{}])
    with pytest.raises(ValueError, match="cls_branch"):
        TaskAlignedHead(4, [16, 32, 64], cls_branch="depthwise")
    with pytest.raises(ValueError, match="psa_blocks"):
        Detector.from_spec(yolo26_spec(4, 0.5, 0.125).replace(
            backbone=yolo26_spec(4, 0.5, 0.125).backbone.replace(options={"stage": "c3k2", "psa_blocks": -1})))
    with pytest.raises(ValueError, match="keeps its width"):
        BottleneckPSA(16, 32)


def test_one_training_step_reaches_every_weight():
    torch.manual_seed(0)
    det = yolo26_layout(0.5, 0.125, num_classes=3).train()
    x = torch.rand(2, 3, 64, 64) * 255
    targets = Targets(torch.tensor([[[4.0, 8, 40, 50]], [[10, 10, 30, 60]]]), torch.tensor([[1], [2]]),
                      torch.ones(2, 1, dtype=torch.bool))
    out = det(x, targets)
    assert torch.isfinite(out["loss"]) and out["num_fg"] > 0 and out["o2o_num_fg"] == 2
    out["loss"].backward()
    psa = det.backbone.psa.blocks[0].attn.qkv.conv.weight
    last = det.neck.bottom_up_stages[1].blocks[0][1].attn.proj.conv.weight
    assert psa.grad is not None and psa.grad.abs().sum() > 0 and last.grad.abs().sum() > 0
    # the one-to-one branch is detached from the features (YOLOv10), the one-to-many one trains everything
    assert det.head.o2o_levels[0].cls_convs[0].dconv.conv.weight.grad.abs().sum() > 0
