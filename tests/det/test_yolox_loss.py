import pytest
import torch

from cspdet.det import SimOTALoss, Targets, box_iou_loss, grid_points
from cspdet.det.boxes import decode_boxes
from torchvision.ops import box_convert


def test_box_iou_loss_values():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]])
    torch.testing.assert_close(box_iou_loss(a, b), torch.tensor([0.0, 0.75]))  # 1 - IoU^2, IoU = 1 and 0.5
    torch.testing.assert_close(box_iou_loss(a, b, "giou"), torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="loss_type"):
        box_iou_loss(a, b, "ciou")


def _inputs(batch=2, size=64, num_classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    points, strides = grid_points([(size // s, size // s) for s in (8, 16, 32)], [8, 16, 32])
    a = points.shape[0]
    reg = (torch.randn(batch, a, 4, generator=gen) * 0.3).requires_grad_()
    obj = torch.randn(batch, a, generator=gen).requires_grad_()
    cls = torch.randn(batch, a, num_classes, generator=gen).requires_grad_()
    boxes = box_convert(decode_boxes(reg, points, strides), "cxcywh", "xyxy")
    return cls, obj, reg, boxes, points, strides


@pytest.mark.parametrize("m", [0, 2])
def test_empty_targets_give_finite_losses_and_gradients(m):
    cls, obj, reg, boxes, points, strides = _inputs()
    targets = Targets(torch.zeros(2, m, 4), torch.zeros(2, m, dtype=torch.int64), torch.zeros(2, m, dtype=torch.bool))
    out = SimOTALoss(3)(cls, obj, reg, boxes, points, strides, targets, use_l1=True)
    assert set(out) == {"loss", "iou_loss", "obj_loss", "cls_loss", "l1_loss", "num_fg"}
    assert all(torch.isfinite(v) for v in out.values())
    assert out["num_fg"] == 0 and out["iou_loss"] == 0 and out["cls_loss"] == 0
    out["loss"].backward()
    assert torch.isfinite(obj.grad).all() and obj.grad.abs().sum() > 0  # background objectness still learns


def test_padded_and_mixed_batch():
    cls, obj, reg, boxes, points, strides = _inputs()
    packed = torch.tensor([[[1.0, 8, 8, 40, 30], [0, 0, 0, 0, 0]], [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]])
    mask = torch.tensor([[True, False], [False, False]])
    targets = Targets.from_packed(packed, mask)
    loss = SimOTALoss(3)
    out = loss(cls, obj, reg, boxes, points, strides, targets, use_l1=True)
    assert out["num_fg"] >= 1 and all(torch.isfinite(v) for v in out.values())
    assert out["l1_loss"] > 0
    torch.testing.assert_close(out["loss"], out["iou_loss"] + out["obj_loss"] + out["cls_loss"] + out["l1_loss"])
    # The padding row must be ignored even if it holds garbage.
    garbage = packed.clone()
    garbage[0, 1] = torch.tensor([2.0, 10, 10, 50, 50])
    again = loss(cls, obj, reg, boxes, points, strides, Targets.from_packed(garbage, mask), use_l1=True)
    torch.testing.assert_close(again["loss"], out["loss"])
    # the earlier call with a packed tensor and its mask still works, warns, and gives the same losses exactly
    with pytest.warns(DeprecationWarning, match="SimOTALoss: packed"):
        old = loss(cls, obj, reg, boxes, points, strides, packed, mask, use_l1=True)
    assert all(torch.equal(old[k], out[k]) for k in out)


def test_bad_targets_are_reported_clearly():
    cls, obj, reg, boxes, points, strides = _inputs()
    loss = SimOTALoss(3)
    with pytest.raises(ValueError, match="class ids"):
        loss(cls, obj, reg, boxes, points, strides, Targets.from_packed(torch.tensor([[[5.0, 0, 0, 9, 9]]] * 2)))
    with pytest.raises(ValueError, match="\\(B, M, 5\\)"), pytest.warns(DeprecationWarning):
        loss(cls, obj, reg, boxes, points, strides, torch.zeros(2, 4), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="SimOTALoss: targets must be a cspdet.det.Targets, got list"):
        loss(cls, obj, reg, boxes, points, strides, [[1.0, 0, 0, 9, 9]])
