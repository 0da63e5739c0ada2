"""Tests for cspdet/models/tal_head.py: the task-aligned head, its one-to-one branch and both inference modes."""

from __future__ import annotations

import json
import math

import cv2
import pytest
import torch
from torch import nn
from torchvision.ops import box_iou

from cspdet.det import Predictions, Targets, to_deploy_layout, topk_postprocess
from cspdet.models import Detector, TaskAlignedHead, TALHeadOutputs, yolov8_layout
from cspdet.models.info import count_parameters


def _feats(batch=2, size=64, channels=(16, 32, 64)):
    return [torch.randn(batch, c, size // s, size // s) for c, s in zip(channels, (8, 16, 32))]


def test_layout_widths_and_frozen_dfl_bins():
    head = TaskAlignedHead(80, [64, 128, 256])  # YOLOv8n's head
    lvl = head.levels[0]
    assert lvl.box_convs[0].conv.out_channels == 64 and lvl.box_pred.out_channels == 64  # max(16, 64 // 4, 4 * 16)
    assert lvl.cls_convs[0].conv.out_channels == 80 and lvl.cls_pred.out_channels == 80  # max(64, min(80, 100))
    assert head.levels[2].cls_convs[0].conv.in_channels == 256
    assert not head.dfl_project.requires_grad and head.dfl_project.tolist() == list(range(16))
    assert head.o2o_levels is None and not head.nms_free
    direct = TaskAlignedHead(3, [16, 32, 64], reg_max=1)
    assert direct.dfl_project is None and direct.levels[0].box_pred.out_channels == 4
    assert direct.levels[0].box_convs[0].conv.out_channels == 16  # max(16, 16 // 4, 4)


def test_bias_init_per_stride_prior_or_fixed():
    head = TaskAlignedHead(80, [64, 128, 256])
    for lvl, s in zip(head.levels, (8, 16, 32)):
        p = 5 / 80 / (640 / s) ** 2  # YOLOv8's prior: ~5 objects per 640 image, over classes and cells
        torch.testing.assert_close(lvl.cls_pred.bias.sigmoid(), torch.full((80,), p))
        assert (lvl.box_pred.bias == 1.0).all()
    fixed = TaskAlignedHead(3, [16, 32, 64], prior_prob=0.01, one2one=True)
    for lvl in [*fixed.levels, *fixed.o2o_levels]:
        assert math.isclose(lvl.cls_pred.bias[0].item(), -math.log(99), rel_tol=1e-6)


def test_one2one_branch_has_separate_weights_and_modes_run_one_branch():
    head = TaskAlignedHead(3, [16, 32, 64], one2one=True)
    assert head.nms_free  # default mode with the one-to-one branch
    assert head.o2o_levels[0].cls_pred.weight.data_ptr() != head.levels[0].cls_pred.weight.data_ptr()
    torch.testing.assert_close(head.o2o_levels[0].cls_pred.weight, head.levels[0].cls_pred.weight)  # same start
    out = head(_feats())
    a = 8 * 8 + 4 * 4 + 2 * 2
    assert out.box.shape == out.o2o_box.shape == (2, a, 64) and out.cls.shape == out.o2o_cls.shape == (2, a, 3)
    head.eval()
    out = head(_feats())
    assert out.box is None and out.cls is None and out.o2o_box is not None  # NMS-free: one-to-one only
    head.nms_free = False
    out = head(_feats())
    assert out.o2o_box is None and out.box is not None
    with pytest.raises(ValueError, match="one2one"):
        TaskAlignedHead(3, [16, 32, 64]).nms_free = True


@pytest.mark.parametrize("reg_max", [16, 1])
def test_decode_layout_is_yolox_with_unit_objectness(reg_max):
    head = TaskAlignedHead(2, [16, 32, 64], reg_max=reg_max).eval()
    out = head(_feats(batch=1))
    a = out.cls.shape[1]
    # Distances l, t, r, b = 1, 2, 3, 4 strides at every point.
    d = torch.tensor([1.0, 2.0, 3.0, 4.0])
    if reg_max > 1:
        box = (torch.nn.functional.one_hot(d.long(), reg_max).float() * 50).flatten()  # peaked on bins 1..4
    else:
        box = torch.log(torch.expm1(d))  # softplus^-1
    dec = head.decode(TALHeadOutputs(box.expand(1, a, -1), out.cls, None, None, out.sizes))
    assert isinstance(dec, Predictions) and dec.objectness is None  # this head has no objectness
    assert dec.boxes.shape == (1, a, 4) and dec.class_scores.shape == (1, a, 2)
    # Point 0 (stride 8) sits at (4, 4): box (4 - 8, 4 - 16, 4 + 24, 4 + 32).
    torch.testing.assert_close(dec.boxes[0, 0], torch.tensor([-4.0, -12.0, 28.0, 36.0]), atol=1e-4, rtol=0)
    # First stride-16 point at (8, 8): the same distances at twice the stride.
    torch.testing.assert_close(dec.boxes[0, 64], torch.tensor([-8.0, -24.0, 56.0, 72.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(dec.class_scores, out.cls.sigmoid())
    # Exported files keep YOLOX's layout, with objectness 1: centre (12, 12), size (32, 48).
    layout = to_deploy_layout(dec)
    assert layout.shape == (1, a, 5 + 2)
    torch.testing.assert_close(layout[0, 0, :5], torch.tensor([12.0, 12.0, 32.0, 48.0, 1.0]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("reg_max,one2one", [(16, True), (1, True), (16, False)])
def test_loss_finite_with_zero_box_batches_and_keys(reg_max, one2one):
    det = yolov8_layout(0.33, 0.125, 4, reg_max=reg_max, one2one=one2one).train()
    x = torch.rand(2, 3, 64, 64) * 255
    for m in (0, 2):
        out = det(x, Targets.from_packed(torch.zeros(2, m, 5), torch.zeros(2, m, dtype=torch.bool)))
        assert torch.isfinite(out["loss"]) and out["num_fg"] == 0 and out["box_loss"] == 0
        det.zero_grad()
        out["loss"].backward()
        grads = [p.grad for p in det.parameters() if p.requires_grad and p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
    targets = torch.tensor([[[1.0, 4, 8, 40, 50]], [[0, 0, 0, 0, 0]]])
    out = det(x, Targets.from_packed(targets, torch.tensor([[True], [False]])))
    assert torch.isfinite(out["loss"]) and out["num_fg"] > 0
    keys = {"loss", "box_loss", "cls_loss", "dfl_loss", "num_fg"}
    assert set(out) == (keys | {"o2m_loss", "o2o_loss", "o2o_num_fg"} if one2one else keys)
    if one2one:
        assert out["o2o_num_fg"] == 1  # one-to-one: one positive for the one box
        w = det.head.o2m_weight
        torch.testing.assert_close(out["loss"].detach(), w * out["o2m_loss"] + (1 - w) * out["o2o_loss"])
        torch.testing.assert_close(out["loss"].detach(), out["box_loss"] + out["cls_loss"] + out["dfl_loss"])


@pytest.mark.parametrize("start, final", [(0.8, 0.1), (0.5, 0.5), (1.0, 0.0)])
def test_the_loss_mix_goes_from_o2m_weight_to_o2m_final_and_the_spec_keeps_it(start, final):
    det = yolov8_layout(0.33, 0.125, 4, one2one=True, o2m_weight=start, o2m_final=final)
    weights = []
    for epoch in range(5):
        det.head.set_epoch(epoch, 5)
        weights.append(det.head.o2m_weight)
    assert weights == pytest.approx([start + (final - start) * e / 4 for e in range(5)])
    options = det.head.spec.options
    assert options.get("o2m_weight", 0.8) == start and options.get("o2m_final", 0.1) == final
    if (start, final) == (0.8, 0.1):  # YOLO26's ProgLoss is the default: nothing recorded
        assert "o2m_weight" not in options and "o2m_final" not in options
    rebuilt = Detector.from_spec(det.spec)
    rebuilt.head.set_epoch(4, 5)
    assert rebuilt.head.o2m_weight == pytest.approx(final)


@pytest.mark.parametrize("name", ["o2m_weight", "o2m_final"])
def test_loss_mix_weights_outside_0_1_are_refused_by_name(name):
    with pytest.raises(ValueError, match=f"{name} must be in \\[0, 1\\], got 1.5"):
        yolov8_layout(0.33, 0.125, 4, one2one=True, **{name: 1.5})


def test_one2one_positives_from_the_one2many_branch_option():
    """``o2o_assign: o2m``: the one-to-one loss is assigned by the one-to-many branch's predictions (recorded in the
    spec); any other value is refused by name."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64) * 255
    targets = Targets.from_packed(torch.tensor([[[1.0, 4, 8, 40, 50]], [[0, 20, 10, 60, 60]]]),
                                  torch.ones(2, 1, dtype=torch.bool))
    det = yolov8_layout(0.33, 0.125, 4, one2one=True, o2o_assign="o2m").train()
    with torch.no_grad():  # the branches start as copies: make them differ
        for p in det.head.o2o_levels.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    assert det.head.spec.options["o2o_assign"] == "o2m"
    assert Detector.from_spec(det.spec).head.o2o_assign == "o2m"
    out = det(x, targets)
    assert out["o2o_num_fg"] == 2 and torch.isfinite(out["loss"])
    # the same weights with their own assignment: the same one-to-many loss, the one-to-one loss of other positives
    det.head.o2o_assign = "own"
    out_own = det(x, targets)
    assert torch.equal(out["o2m_loss"], out_own["o2m_loss"]) and not torch.equal(out["o2o_loss"], out_own["o2o_loss"])
    with pytest.raises(ValueError, match="o2o_assign must be 'own' or 'o2m', got 'dense'"):
        yolov8_layout(0.33, 0.125, 4, one2one=True, o2o_assign="dense")


def test_under_adamw_a_constant_mix_trains_the_shared_network_as_if_there_were_no_one2one_branch():
    """Why ``small_scratch`` holds the mix constant: with detached one-to-one features the branches share no
    parameter, and Adam's update is invariant to a constant gradient scale, so the backbone, neck and one-to-many
    branch follow the same path as without the one-to-one branch (up to Adam's eps). YOLO26's decaying mix does
    not (tests/det/test_tal.py measures what it does to Adam's steps)."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64) * 255
    targets = Targets(torch.tensor([[[4.0, 8, 40, 50], [30, 20, 60, 60]], [[10, 10, 30, 40], [0, 0, 0, 0]]]),
                      torch.tensor([[1, 2], [0, 0]]), torch.tensor([[True, True], [True, False]]))

    def train(model, mix=None, steps=8):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-15)  # eps out of the way: see below
        for step in range(steps):
            if mix is not None:
                model.head.o2m_weight = mix(step)
            opt.zero_grad()
            model(images, targets)["loss"].backward()
            opt.step()
        return model.state_dict()

    base = yolov8_layout(0.33, 0.125, 3, one2one=False).train()
    init = {k: v.clone() for k, v in base.state_dict().items()}
    shared = [k for k, _ in base.named_parameters() if k.startswith(("backbone.", "neck.", "head.levels."))]

    def with_one2one():
        model = yolov8_layout(0.33, 0.125, 3, one2one=True).train()
        model.load_state_dict({**model.state_dict(), **init})
        return model

    alone = train(base)
    constant = train(with_one2one(), mix=lambda step: 0.5)
    decaying = train(with_one2one(), mix=lambda step: 0.8 - 0.1 * step)  # YOLO26's 0.8 -> 0.1 over eight steps

    # Adam's update m / (sqrt(v) + eps) does not see a constant factor on the gradient but through eps (at the
    # default 1e-8 a few weights with gradients near 1e-8 differ by ~2 % of a step); each step moves a weight by up
    # to lr = 1e-3 (8e-3 over the eight steps; rounding leaves ~1e-6)
    for k in shared:
        torch.testing.assert_close(constant[k], alone[k], rtol=1e-4, atol=1e-5)
    assert max(float((decaying[k] - alone[k]).abs().max()) for k in shared) > 1e-4  # a changing mix does not


@pytest.mark.parametrize("detach", [True, False])
def test_one2one_branch_sees_detached_features(detach):
    det = yolov8_layout(0.33, 0.125, 4, one2one=True, o2o_detach=detach).train()
    det.head.o2m_weight = 0.0  # only the one-to-one loss
    out = det(torch.rand(1, 3, 64, 64) * 255, Targets(torch.tensor([[[4.0, 8, 40, 50]]]), torch.tensor([[1]]),
                                                       torch.tensor([[True]])))
    out["loss"].backward()
    neck_grad = sum(p.grad.abs().sum() for p in det.neck.parameters() if p.grad is not None)
    assert det.head.o2o_levels[0].cls_pred.weight.grad.abs().sum() > 0
    assert (neck_grad == 0) == detach
    assert det.head.levels[0].cls_pred.weight.grad is None or not det.head.levels[0].cls_pred.weight.grad.any()


def test_detector_predict_uses_the_existing_nms_postprocess_in_o2m_mode():
    det = yolov8_layout(0.33, 0.125, 3)
    assert isinstance(det, Detector) and det.num_classes == 3 and det.strides == (8, 16, 32)
    x = torch.rand(1, 3, 64, 96) * 255
    dets = det.predict(x, conf=0.0, max_det=7)
    det.eval()
    with torch.no_grad():
        again = det.head.postprocess(det(x), conf=0.0, max_det=7)
    assert len(dets[0]["boxes"]) == 7
    torch.testing.assert_close(dets[0]["scores"], again[0]["scores"])


def _real_batch(coco128_root, size):
    """coco128 train image 309 (3 teddy bears and a dog, side by side) resized to size x size, and its flip."""
    data = json.loads((coco128_root / "annotations" / "instances_train.json").read_text())
    im = next(i for i in data["images"] if i["file_name"] == "000000000309.jpg")
    anns = [a for a in data["annotations"] if a["image_id"] == im["id"]]
    cats = sorted({a["category_id"] for a in anns})
    bgr = cv2.imread(str(coco128_root / "images" / "train" / im["file_name"]))
    img = torch.from_numpy(cv2.resize(bgr[:, :, ::-1].copy(), (size, size))).permute(2, 0, 1).float()
    sx, sy = size / im["width"], size / im["height"]
    t = torch.tensor([[cats.index(a["category_id"]), a["bbox"][0] * sx, a["bbox"][1] * sy,
                       (a["bbox"][0] + a["bbox"][2]) * sx, (a["bbox"][1] + a["bbox"][3]) * sy] for a in anns])
    flipped = t.clone()
    flipped[:, 1], flipped[:, 3] = size - t[:, 3], size - t[:, 1]
    packed = torch.stack([t, flipped])
    return torch.stack([img, img.flip(-1)]), Targets.from_packed(packed), len(cats)


def _overfit(det, images, targets, steps):
    opt = torch.optim.AdamW([p for p in det.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
    det.train()
    losses = []
    for _ in range(steps):
        out = det(images, targets)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    # Running statistics of the final weights: a short run moves the weights faster than BN's momentum-0.03
    # averages follow, so recalibrate them on the batch (no gradient) before evaluating.
    with torch.no_grad():
        for m in det.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = 1.0
        det(images, targets)
    return losses


def _same_class_duplicates(r, thr=0.5):
    iou = box_iou(r["boxes"], r["boxes"]).fill_diagonal_(0)
    same = r["labels"][:, None] == r["labels"][None]
    return int(((iou > thr) & same).sum()) // 2


def test_overfit_one_real_batch_recovers_boxes_and_one2one_needs_no_nms(coco128_root):
    torch.manual_seed(0)
    images, targets, num_classes = _real_batch(coco128_root, 160)
    det = yolov8_layout(0.33, 0.125, num_classes, one2one=True, o2m_weight=0.5)
    losses = _overfit(det, images, targets, 120)
    assert losses[-1] < 0.2 * losses[0]
    det.eval()
    gt = targets.per_image()[0]
    for nms_free in (True, False):
        det.head.nms_free = nms_free
        with torch.no_grad():
            preds = det(images[:1])
        r = det.head.postprocess(preds, conf=0.25)[0]
        iou = box_iou(gt.boxes, r["boxes"])
        best = iou.argmax(1)
        assert (iou.max(1).values > 0.6).all(), (nms_free, iou)  # every object found ...
        assert torch.equal(r["labels"][best], gt.labels)  # ... with its class
        assert _same_class_duplicates(r) == 0
        # Without any NMS: the one-to-one branch gives one detection per object, the one-to-many branch many.
        raw = topk_postprocess(preds, conf=0.25)[0]
        if nms_free:
            assert len(raw["boxes"]) == len(gt) and _same_class_duplicates(raw) == 0
        else:
            assert _same_class_duplicates(raw) > len(gt)


def test_overfit_direct_regression_reg_max_1(coco128_root):
    torch.manual_seed(0)
    images, targets, num_classes = _real_batch(coco128_root, 128)
    det = yolov8_layout(0.33, 0.125, num_classes, reg_max=1)
    assert count_parameters(det.head) < count_parameters(yolov8_layout(0.33, 0.125, num_classes).head)
    losses = _overfit(det, images, targets, 80)
    assert losses[-1] < 0.2 * losses[0]
    r = det.predict(images[:1], conf=0.25)[0]
    assert (box_iou(targets.boxes[0], r["boxes"]).max(1).values > 0.6).all()
