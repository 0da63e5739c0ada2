"""The typed targets: per-image records padded into a batch record, moved, rescaled, cut back, and the packed layout
of earlier versions converted both ways."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from cspdet.det import ImageTargets, Targets
from cspdet.det.targets import as_targets


def _images(with_keypoints: bool = False) -> list[ImageTargets]:
    rng = np.random.default_rng(0)
    out = []
    for n in (3, 0, 5):
        xy = rng.uniform(0, 50, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(1, 20, (n, 2)).astype(np.float32)], 1)
        extras = {"keypoints": rng.uniform(0, 64, (n, 4, 3)).astype(np.float32),
                  "track_id": np.arange(n, dtype=np.int64) + 10} if with_keypoints else {}
        out.append(ImageTargets(boxes, rng.integers(0, 7, n), extras))
    return out


def test_collate_pads_to_the_largest_image_with_shapes_and_dtypes():
    images = _images()
    t = Targets.collate(images)
    assert t.boxes.shape == (3, 5, 4) and t.boxes.dtype == torch.float32
    assert t.labels.shape == (3, 5) and t.labels.dtype == torch.int64
    assert t.mask.shape == (3, 5) and t.mask.dtype == torch.bool
    assert t.batch_size == len(t) == 3 and t.max_boxes == 5 and t.num_boxes.tolist() == [3, 0, 5]
    assert torch.equal(t.mask, torch.arange(5) < t.num_boxes[:, None])
    assert (t.boxes[~t.mask] == 0).all() and (t.labels[~t.mask] == 0).all()
    for got, want in zip(t.per_image(), images):
        np.testing.assert_array_equal(got.boxes.numpy(), want.boxes)
        np.testing.assert_array_equal(got.labels.numpy(), want.labels)
    empty = Targets.collate([ImageTargets.empty(), ImageTargets.empty()])
    assert empty.boxes.shape == (2, 0, 4) and empty.num_boxes.tolist() == [0, 0]
    assert Targets.empty(2).boxes.shape == (2, 0, 4) and Targets.collate([]).batch_size == 0


def test_extras_are_padded_moved_scaled_and_cut_with_the_boxes():
    images = _images(with_keypoints=True)
    t = Targets.collate(images)
    assert t.extras["keypoints"].shape == (3, 5, 4, 3) and t.extras["track_id"].dtype == torch.int64
    s = t.scaled(2.0, 0.5)
    torch.testing.assert_close(s.extras["keypoints"][..., 0], t.extras["keypoints"][..., 0] * 2.0, rtol=0, atol=0)
    torch.testing.assert_close(s.extras["keypoints"][..., 1], t.extras["keypoints"][..., 1] * 0.5, rtol=0, atol=0)
    assert torch.equal(s.extras["keypoints"][..., 2], t.extras["keypoints"][..., 2])  # visibility: not geometry
    assert torch.equal(s.extras["track_id"], t.extras["track_id"])  # not geometry either
    moved = t.to("cpu")
    assert set(moved.extras) == {"keypoints", "track_id"}
    for got, want in zip(s.per_image(), images):
        np.testing.assert_array_equal(got.extras["track_id"].numpy(), want.extras["track_id"])
        np.testing.assert_allclose(got.extras["keypoints"][..., 0].numpy(), want.extras["keypoints"][..., 0] * 2)
    with pytest.raises(ValueError, match=r"image 1 has extras \[\], image 0 has \['keypoints', 'track_id'\]"):
        Targets.collate([images[0], ImageTargets.empty()])


def test_scaled_is_the_multiscale_rescale_exactly_and_leaves_the_record_alone():
    t = Targets.collate(_images())
    before = t.boxes.clone()
    sx, sy = 96 / 64, 128 / 64
    s = t.scaled(sx, sy)
    old = t.to_packed().clone()  # what the trainer did to the packed tensor
    old[..., 1::2] *= sx
    old[..., 2::2] *= sy
    assert torch.equal(s.boxes, old[..., 1:]) and torch.equal(s.labels, t.labels) and torch.equal(s.mask, t.mask)
    assert torch.equal(t.boxes, before)


def test_packed_round_trip_and_the_deprecated_conversion():
    t = Targets.collate(_images())
    packed = t.to_packed()
    assert packed.shape == (3, 5, 5) and packed.dtype == torch.float32
    back = Targets.from_packed(packed, t.mask)
    assert torch.equal(back.boxes, t.boxes) and torch.equal(back.labels, t.labels) and torch.equal(back.mask, t.mask)
    assert Targets.from_packed(packed).mask.all()  # no mask: every row is a box
    with pytest.warns(DeprecationWarning, match="f: packed"):
        converted = as_targets(packed, t.mask.int(), caller="f")
    assert torch.equal(converted.boxes, t.boxes) and converted.mask.dtype == torch.bool
    assert as_targets(t, caller="f") is t
    with pytest.raises(ValueError, match=r"packed targets must be \(B, M, 5\).*\(3, 5, 4\)"):
        Targets.from_packed(t.boxes)
    with pytest.raises(ValueError, match=r"target mask must be \(B, M\) = \(3, 5\), got \(3, 4\)"):
        Targets.from_packed(packed, t.mask[:, :4])
    # one image's record still answers the (N, 5) indexing of earlier versions, with a warning
    image = _images()[0]
    with pytest.warns(DeprecationWarning, match="targets.boxes / targets.labels"):
        np.testing.assert_array_equal(image[:, 1:], image.boxes)


def test_bad_records_are_one_line_errors():
    boxes, labels, mask = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.int64), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"boxes must be \(B, M, 4\) xyxy, got \(2, 3, 5\)"):
        Targets(torch.zeros(2, 3, 5), labels, mask)
    with pytest.raises(ValueError, match=r"labels and mask must be \(B, M\) = \(2, 3\)"):
        Targets(boxes, labels[:, :2], mask)
    with pytest.raises(ValueError, match="labels must be int64 class indices, got torch.float32"):
        Targets(boxes, labels.float(), mask)
    with pytest.raises(ValueError, match="mask must be bool, got torch.int64"):
        Targets(boxes, labels, mask.long())
    with pytest.raises(ValueError, match=r"extras\['kp'\] must be \(B, M, ...\)"):
        Targets(boxes, labels, mask, {"kp": torch.zeros(2, 4, 3)})
    with pytest.raises(ValueError, match=r"labels must be \(N,\) = \(2,\)"):
        ImageTargets(np.zeros((2, 4), np.float32), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\)"):
        ImageTargets(np.zeros((2, 5), np.float32), np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="f: targets must be a cspdet.det.Targets, got dict"):
        as_targets({"boxes": boxes}, caller="f")
    t = Targets(boxes, labels, mask)
    with pytest.raises(ValueError, match="f: a target mask that differs from targets.mask"):
        as_targets(t, ~mask, caller="f")


def test_the_record_travels_between_processes_and_is_immutable():
    t = Targets.collate(_images(with_keypoints=True))
    again = pickle.loads(pickle.dumps(t))  # loader workers hand batches over by pickling
    assert torch.equal(again.boxes, t.boxes) and torch.equal(again.extras["keypoints"], t.extras["keypoints"])
    with pytest.raises(AttributeError):
        t.boxes = t.boxes * 2  # frozen: a rescale makes a new record (scaled), it never edits a shared one


def test_equal_is_exact_values_and_dtypes():
    t = Targets.collate(_images(with_keypoints=True))
    assert t.equal(Targets.collate(_images(with_keypoints=True))) and t.equal(t.to("cpu"))
    assert not t.equal(t.scaled(1.0, 1.0 + 1e-6))
    assert not t.equal(Targets(t.boxes.double(), t.labels, t.mask, t.extras))
    assert not t.equal(Targets(t.boxes, t.labels, t.mask))  # extras missing
    a, b = _images()[0], _images()[0]
    assert a.equal(b) and not a.equal(ImageTargets(a.boxes, a.labels + 1))
    assert not a.equal(ImageTargets(a.boxes.astype(np.float64), a.labels))
