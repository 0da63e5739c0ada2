import math

import pytest
import torch

from cspdet.det import Predictions, Targets, to_deploy_layout
from cspdet.models.yolox_head import DecoupledHead, HeadOutputs
from cspdet.models.layers import DWConv


def _feats(batch=2, size=64, channels=(16, 32, 64)):
    return [torch.randn(batch, c, size // s, size // s) for c, s in zip(channels, (8, 16, 32))]


def test_raw_outputs_and_layout():
    head = DecoupledHead(5, [16, 32, 64], hidden_channels=24)
    out = head(_feats())
    assert isinstance(out, HeadOutputs)
    a = 8 * 8 + 4 * 4 + 2 * 2
    assert out.reg.shape == (2, a, 4) and out.obj.shape == (2, a) and out.cls.shape == (2, a, 5)
    assert out.sizes == ((8, 8), (4, 4), (2, 2))
    # Decoupled: classification and regression branches do not share weights.
    lvl = head.levels[0]
    assert lvl.cls_convs[0].conv.weight.data_ptr() != lvl.reg_convs[0].conv.weight.data_ptr()


def test_prior_prob_bias_init():
    head = DecoupledHead(3, [8, 8, 8], hidden_channels=8, prior_prob=0.01)
    for lvl in head.levels:
        torch.testing.assert_close(lvl.cls_pred.bias.sigmoid(), torch.full((3,), 0.01))
        torch.testing.assert_close(lvl.obj_pred.bias.sigmoid(), torch.full((1,), 0.01))
    assert math.isclose(head.levels[0].obj_pred.bias.item(), -math.log(99), rel_tol=1e-6)


def test_decode_is_anchor_free_grid_times_stride():
    head = DecoupledHead(2, [16, 32, 64], hidden_channels=16).eval()
    out = head(_feats(batch=1))
    zero = HeadOutputs(torch.zeros_like(out.reg), out.obj, out.cls, out.sizes)
    dec = head.decode(zero)
    assert isinstance(dec, Predictions)
    assert dec.boxes.shape == (1, 84, 4) and dec.class_scores.shape == (1, 84, 2) and dec.objectness.shape == (1, 84)
    # Raw zeros decode to a stride-sized box centred on the cell's top-left corner (YOLOX's offset convention).
    torch.testing.assert_close(dec.boxes[0, 0], torch.tensor([-4.0, -4.0, 4.0, 4.0]))
    torch.testing.assert_close(dec.boxes[0, 9], torch.tensor([4.0, 4.0, 12.0, 12.0]))  # row 1, column 1 at stride 8
    torch.testing.assert_close(dec.boxes[0, 64], torch.tensor([-8.0, -8.0, 8.0, 8.0]))  # first stride-16 point
    for probs in (dec.objectness, dec.class_scores):
        assert ((probs > 0) & (probs < 1)).all()
    # The deploy layout (exported files) is YOLOX's: cx, cy, w, h, objectness, class probabilities.
    layout = to_deploy_layout(dec)
    torch.testing.assert_close(layout[0, 9, :4], torch.tensor([8.0, 8.0, 8.0, 8.0]))
    torch.testing.assert_close(layout[..., 4], dec.objectness)
    torch.testing.assert_close(layout[..., 5:], dec.class_scores)


def test_set_epoch_switches_l1_on_in_the_no_aug_phase():
    head = DecoupledHead(3, [16, 32, 64], hidden_channels=16)
    head.set_epoch(0, 10, "train")
    assert not head.use_l1
    head.set_epoch(8, 10, "no_aug")
    assert head.use_l1


def test_depthwise_branches_and_loss_with_l1_switch():
    head = DecoupledHead(3, [16, 32, 64], hidden_channels=16, depthwise=True)
    assert isinstance(head.levels[0].cls_convs[0], DWConv)
    out = head(_feats())
    targets = Targets(torch.tensor([[[4.0, 4, 40, 36]], [[20, 10, 60, 60]]]), torch.tensor([[0], [2]]),
                      torch.ones(2, 1, dtype=torch.bool))
    losses = head.loss(out, targets)
    assert losses["l1_loss"] == 0
    head.use_l1 = True
    losses = head.loss(out, targets)
    assert losses["l1_loss"] > 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert head.levels[0].reg_pred.weight.grad is not None


def test_bad_arguments():
    with pytest.raises(ValueError, match="strides"):
        DecoupledHead(3, [16, 32], hidden_channels=8)
    with pytest.raises(ValueError, match="num_classes"):
        DecoupledHead(0, [16, 32, 64], hidden_channels=8)
    with pytest.raises(ValueError, match="feature maps"):
        DecoupledHead(3, [16, 32, 64], hidden_channels=8)(_feats()[:2])
