import pytest
import torch
from torchvision.ops import box_convert, box_iou

from cspdet.det import batched_box_iou, cxcywh_to_xyxy, decode_boxes, elementwise_box_iou, grid_points, xyxy_to_cxcywh
from cspdet.det.yolox_loss import encode_l1_targets


def _random_boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * 100
    wh = torch.rand(n, 2, generator=gen) * 50 + 1
    return torch.cat([xy, xy + wh], 1)


def test_batched_iou_matches_torchvision():
    gen = torch.Generator().manual_seed(0)
    a = torch.stack([_random_boxes(5, gen) for _ in range(3)])
    b = torch.stack([_random_boxes(7, gen) for _ in range(3)])
    ious = batched_box_iou(a, b)
    assert ious.shape == (3, 5, 7)
    for i in range(3):
        torch.testing.assert_close(ious[i], box_iou(a[i], b[i]))
    torch.testing.assert_close(elementwise_box_iou(a[0], a[0]), torch.ones(5))


def test_degenerate_boxes_give_zero_iou_not_nan():
    zero = torch.zeros(1, 1, 4)
    assert batched_box_iou(zero, zero).item() == 0.0


def test_grid_points_order_and_decode_roundtrip():
    points, strides = grid_points([(2, 3), (1, 2)], [8, 16])
    assert points.shape == (8, 2) and strides.tolist() == [8.0] * 6 + [16.0] * 2
    # Row-major within a level: x varies fastest.
    assert points[:4].tolist() == [[0, 0], [1, 0], [2, 0], [0, 1]]
    gen = torch.Generator().manual_seed(1)
    boxes = _random_boxes(8, gen)
    raw = encode_l1_targets(boxes, points, strides)
    decoded = box_convert(decode_boxes(raw, points, strides), "cxcywh", "xyxy")
    torch.testing.assert_close(decoded, boxes, atol=1e-3, rtol=1e-5)


def test_grid_points_length_mismatch_is_clear():
    with pytest.raises(ValueError, match="strides"):
        grid_points([(2, 2)], [8, 16])


def test_box_conversions_are_box_converts_operations_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    cxcywh = torch.cat((torch.rand(2, 500, 2, generator=g) * 640, torch.rand(2, 500, 2, generator=g) * 200), -1)
    xyxy = cxcywh_to_xyxy(cxcywh)
    assert torch.equal(xyxy, box_convert(cxcywh, "cxcywh", "xyxy"))
    assert torch.equal(xyxy_to_cxcywh(xyxy), box_convert(xyxy, "xyxy", "cxcywh"))
