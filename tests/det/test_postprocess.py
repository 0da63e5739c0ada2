import inspect

import pytest
import torch

from cspdet.det import postprocess
from cspdet.models import Detector


def _preds() -> torch.Tensor:
    # Three points, 2 classes: two overlapping boxes of class 0 and one box of class 1 on top of them.
    p = torch.zeros(1, 3, 7)
    p[0, :, :4] = torch.tensor([[50.0, 50, 20, 20], [51, 51, 20, 20], [50, 50, 20, 20]])
    p[0, :, 4] = torch.tensor([0.9, 0.8, 0.7])
    p[0, :, 5:] = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.2, 0.9]])
    return p


def test_class_aware_nms_and_layout():
    (out,) = postprocess(_preds(), conf=0.1, iou=0.5)
    assert out["boxes"].dtype == torch.float32 and out["labels"].dtype == torch.int64
    # The second class-0 box is suppressed; the class-1 box survives class-aware NMS.
    assert out["labels"].tolist() == [0, 1]
    torch.testing.assert_close(out["scores"], torch.tensor([0.81, 0.63]))
    torch.testing.assert_close(out["boxes"][0], torch.tensor([40.0, 40, 60, 60]))


def test_agnostic_classes_conf_and_max_det():
    (out,) = postprocess(_preds(), conf=0.1, iou=0.5, agnostic=True)
    assert out["labels"].tolist() == [0]
    (out,) = postprocess(_preds(), conf=0.1, iou=0.5, classes=[1])
    assert out["labels"].tolist() == [1]
    (out,) = postprocess(_preds(), conf=0.7, iou=0.99)
    assert out["scores"].tolist() == pytest.approx([0.81, 0.72])
    (out,) = postprocess(_preds(), conf=0.1, iou=0.99, max_det=2)
    assert len(out["scores"]) == 2
    (out,) = postprocess(_preds(), conf=0.99)
    assert out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)


def test_pre_nms_topk_keeps_best():
    (out,) = postprocess(_preds(), conf=0.1, iou=0.99, pre_nms_topk=1)
    assert out["scores"].tolist() == pytest.approx([0.81])


def test_bad_shape_is_clear():
    with pytest.raises(ValueError, match="5 \\+ C"):
        postprocess(torch.zeros(2, 10, 5))


def test_default_applies_no_pre_nms_cap_like_yolox():
    assert inspect.signature(postprocess).parameters["pre_nms_topk"].default is None
    assert inspect.signature(Detector.predict).parameters["pre_nms_topk"].default is None
    # 40 disjoint boxes that all pass conf: without a cap every one survives, a cap keeps only the best ones.
    n = 40
    p = torch.zeros(1, n, 6)
    p[0, :, 0] = torch.arange(n, dtype=torch.float32) * 30 + 10
    p[0, :, 1], p[0, :, 2:4] = 10.0, 10.0
    p[0, :, 4] = torch.linspace(0.9, 0.5, n)
    p[0, :, 5] = 1.0
    (out,) = postprocess(p, conf=0.1, iou=0.5, max_det=100)
    assert len(out["scores"]) == n
    (capped,) = postprocess(p, conf=0.1, iou=0.5, max_det=100, pre_nms_topk=8)
    torch.testing.assert_close(capped["scores"], out["scores"][:8])


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_pre_nms_topk_is_clear(bad):
    with pytest.raises(ValueError, match="pre_nms_topk must be None"):
        postprocess(_preds(), pre_nms_topk=bad)
