"""cspdet.data.Letterbox: apply / invert round trip and clipping (numpy and torch), and bit-for-bit the same
numbers as the code it replaced (``transforms.letterbox`` and the two hand-written inverses)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cspdet.data import Letterbox, ValDataset, build_dataset
from letterbox_reference import old_letterbox  # tests/letterbox_reference.py


def _old_predictor_invert(boxes: np.ndarray, r: float, h: int, w: int) -> np.ndarray:
    """``Predictor.predict_images`` before: float32 boxes / r, clipped column by column."""
    boxes = boxes / r
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    return boxes


def _old_evaluator_invert(boxes: np.ndarray, ratio: float, orig_size) -> np.ndarray:
    """``detections_to_coco`` before: float64 boxes / ratio, clipped column by column."""
    b = boxes.astype(np.float64).reshape(-1, 4) / float(ratio)
    if orig_size is not None:
        h, w = orig_size
        b[:, 0::2] = b[:, 0::2].clip(0, w)
        b[:, 1::2] = b[:, 1::2].clip(0, h)
    return b


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    """Equal including the sign of zero (which json output would show)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    uint = {4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    np.testing.assert_array_equal(a.view(uint), b.view(uint))


# image shapes (h, w): wide, tall, exact fit, odd sizes where round(w * r) overshoots, tiny
SHAPES = [(90, 200), (200, 90), (64, 80), (128, 128), (333, 517), (17, 1000), (481, 640), (1, 1), (3, 2)]


@pytest.mark.parametrize("size", [(128, 128), (160, 128), (64, 80), (640, 640), (96, 320)])
def test_apply_is_bit_identical_to_theold_letterbox(size):
    rng = np.random.default_rng(0)
    for h, w in SHAPES:
        for channels in (3, 4):  # the training path letterboxes RGB + a spare channel
            image = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
            want, want_r = old_letterbox(image, size)
            got, r = Letterbox(size).apply(image)
            assert r == want_r and got.dtype == np.uint8 and got.shape == (*size, channels)
            np.testing.assert_array_equal(got, want)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Letterbox(size, pad_value=0).apply(image)[0], old_letterbox(image, size, 0)[0])


def test_invert_is_bit_identical_to_the_old_predictor_and_evaluator_formulas():
    rng = np.random.default_rng(1)
    boxes = rng.uniform(-60, 700, (300, 4)).astype(np.float32)  # many beyond the image: clipping matters
    boxes[:4] = [[-0.0, 0.0, 128.0, 128.0], [0.0, -0.0, -0.0, 0.0], [-1e-7, 1e-7, 1e9, -1e9], [5, 5, 5, 5]]
    for r, (h, w) in [(0.64, (90, 200)), (128 / 517, (333, 517)), (2.0, (32, 32)),
                      (float(np.float32(0.3017)), (401, 212)), (1.0, (640, 640))]:
        before = boxes.copy()
        got = Letterbox.invert(boxes, r, (h, w))
        np.testing.assert_array_equal(boxes, before)  # the input is not modified
        _same_bits(got, _old_predictor_invert(boxes, r, h, w))  # float32 in, float32 out
        _same_bits(Letterbox.invert(boxes.astype(np.float64), r, (h, w)), _old_evaluator_invert(boxes, r, (h, w)))
        _same_bits(Letterbox.invert(boxes.astype(np.float64), r, None), _old_evaluator_invert(boxes, r, None))
        # torch: same values, same kind of array
        t = Letterbox.invert(torch.from_numpy(boxes), r, (h, w))
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
        np.testing.assert_allclose(t.numpy(), got, rtol=1e-6, atol=0)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_round_trip_maps_boxes_back_and_clips(as_tensor):
    h, w = 90, 200
    image = np.full((h, w, 3), 30, np.uint8)
    blocks = np.array([[10, 5, 60, 40], [150, 20, 200, 90]], np.float32)  # the second touches the corner
    for x1, y1, x2, y2 in blocks.astype(int):
        image[y1:y2, x1:x2] = 250
    lb = Letterbox((128, 96))
    padded, r = lb.apply(image)
    assert r == pytest.approx(96 / 200) and padded.shape == (128, 96, 3)
    # find the blocks again in the letterboxed image (bright pixels), map them back, compare
    found = []
    for x1, y1, x2, y2 in blocks * r:
        left, top = max(0, int(x1) - 3), max(0, int(y1) - 3)  # a window a little larger than the block
        ys, xs = np.nonzero(padded[top:int(np.ceil(y2)) + 3, left:int(np.ceil(x2)) + 3, 0] > 140)
        found.append([left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1])
    found = np.asarray(found, np.float32)
    # boxes in the pad area and left of / above the image are clipped to the original image
    outside = np.array([[-20, -10, 30, 40], [90, 10, 96, 128]], np.float32)
    inputs = np.concatenate([found, outside])
    if as_tensor:
        inputs = torch.from_numpy(inputs)
    back = Letterbox.invert(inputs, r, (h, w))
    assert isinstance(back, torch.Tensor) == as_tensor
    back = np.asarray(back)
    # within the resize rounding: the bilinear edge may move by one input px, i.e. 1 / r original px
    np.testing.assert_allclose(back[:2], blocks, atol=1.5 / r)
    np.testing.assert_allclose(back[2], [0, 0, 30 / r, 40 / r], rtol=1e-6)
    np.testing.assert_allclose(back[3], [90 / r, 10 / r, w, h], rtol=1e-6)  # 96 / r = 200 exactly, 128 / r > 90
    exact = blocks * np.float32(r)  # the forward box mapping (input px = original px * r) inverts exactly
    np.testing.assert_allclose(Letterbox.invert(exact, r, (h, w)), blocks, rtol=1e-6)


def test_size_is_normalised_and_checked():
    assert Letterbox(128).size == (128, 128)
    assert Letterbox([96, np.int64(160)]).size == (96, 160)
    assert Letterbox((64, 80)) == Letterbox([64, 80])  # a value: equal by size and pad
    for bad in [(0, 64), (64,), (64, 80, 3), (64.5, 64), -32]:
        with pytest.raises(ValueError, match="letterbox size"):
            Letterbox(bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Letterbox(64).size = (32, 32)


def test_val_dataset_letterbox_is_the_old_one(coco_dir):
    ds = build_dataset(coco_dir / "dataset.yaml", "train")
    val = ValDataset(ds, (64, 80))
    assert val.img_size == (64, 80)
    for i in range(len(ds)):
        item = val[i]
        image, targets, ratio, orig = item.image, item.targets, item.ratio, item.orig_size
        s = ds.load_sample(i)
        want, r = old_letterbox(s.image, (64, 80))
        np.testing.assert_array_equal(image, want)
        assert ratio == float(r) and tuple(orig) == s.image.shape[:2]
        np.testing.assert_array_equal(targets.boxes, s.boxes * np.float32(r))
