"""Augmentation: boxes stay inside the image and on their objects; letterbox; determinism."""

from __future__ import annotations

import numpy as np
import pytest

from cspdet.data import AugmentConfig, DetectionItem, Letterbox, TrainDataset, build_dataset
from cspdet.data.box_geometry import box_candidates
from cspdet.data.transforms import mixup

SIZE = 128


def _class_mask(image: np.ndarray, label: int) -> np.ndarray:
    """Pixels that clearly show the solid colour of class ``label`` (red, green, blue)."""
    others = [c for c in range(3) if c != label]
    return (image[..., label] > 150) & (image[..., others[0]] < 100) & (image[..., others[1]] < 100)


def _dataset(coco_dir):
    return build_dataset(coco_dir / "dataset.yaml", "train")


def test_letterbox_top_left_and_ratio():
    img = np.full((50, 100, 3), 7, np.uint8)
    out, r = Letterbox((64, 80)).apply(img)
    assert out.shape == (64, 80, 3) and r == pytest.approx(0.8)
    assert (out[:40, :80] == 7).all() and (out[40:] == 114).all()  # content top-left, pad bottom/right
    out, r = Letterbox((100, 200), pad_value=0).apply(img)
    assert r == 2.0 and out.shape == (100, 200, 3) and (out == 7).all()


def test_box_candidates():
    b = np.array([[0, 0, 2, 50], [0, 0, 10, 10], [0, 0, 100, 4], [0, 0, 10, 10]], np.float32)
    ref = np.array([100, 100, 400, 1000], np.float32)
    # too thin (2 px) / kept / aspect 25 >= 20 / 100 <= 0.1 * 1000 of its uncropped area
    assert box_candidates(b, ref).tolist() == [False, True, False, False]


@pytest.mark.parametrize("strong", [True, False])
def test_augmented_boxes_inside_and_on_their_objects(coco_dir, strong):
    ds = _dataset(coco_dir)
    cfg = AugmentConfig(img_size=(SIZE, SIZE), hsv_prob=0.0, mixup_prob=0.0)
    train = TrainDataset(ds, cfg, seed=3)
    if not strong:
        train.close_mosaic()
    covered = total = n_boxes = 0
    for epoch in range(12):
        for i in range(len(ds)):
            item = train[(i, epoch, strong)]
            image, targets = item.image, item.targets
            assert isinstance(item, DetectionItem) and item.ratio == 1.0 and not item.problems
            assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
            boxes, labels = targets.boxes, targets.labels
            assert boxes.dtype == np.float32 and boxes.shape[1] == 4 and labels.dtype == np.int64
            assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= SIZE).all() and (boxes[:, [1, 3]] <= SIZE).all()
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
            for label in range(3):
                mask = _class_mask(image, label)
                in_boxes = np.zeros_like(mask)
                for (x1, y1, x2, y2), lab in zip(boxes, labels):
                    if lab != label:
                        continue
                    n_boxes += 1
                    xi1, yi1, xi2, yi2 = int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)), int(np.ceil(y2))
                    in_boxes[yi1:yi2, xi1:xi2] = True
                    if x2 - x1 >= 6 and y2 - y1 >= 6:  # the object fills most of its (rotated) box
                        inner = mask[int(y1) + 1 : int(y2) - 1, int(x1) + 1 : int(x2) - 1]
                        assert inner.mean() > 0.45, (epoch, i, label, (x1, y1, x2, y2), inner.mean())
                covered += int((mask & in_boxes).sum())
                total += int(mask.sum())
    assert n_boxes > 30
    assert covered / total > 0.95  # object pixels outside every box: only filtered slivers


def test_determinism_and_epoch_dependence(coco_dir):
    ds = _dataset(coco_dir)
    cfg = AugmentConfig(img_size=(SIZE, SIZE))
    a = TrainDataset(ds, cfg, seed=11)
    b = TrainDataset(ds, cfg, seed=11)
    for i in range(3):
        x, y = a[(i, 5, True)], b[(i, 5, True)]
        assert np.array_equal(x.image, y.image) and x.targets.equal(y.targets)
    assert not np.array_equal(a[(0, 5, True)].image, a[(0, 6, True)].image)
    assert not np.array_equal(a[(0, 5, True)].image, TrainDataset(ds, cfg, seed=12)[(0, 5, True)].image)


def test_close_mosaic_is_letterbox_plus_flip(coco_dir):
    ds = _dataset(coco_dir)
    train = TrainDataset(ds, AugmentConfig(img_size=(SIZE, SIZE), hsv_prob=0.0, flip_prob=0.0), seed=0)
    train.close_mosaic()
    image, targets, image_id, ratio, orig = train[0]  # the tuple form of earlier versions still unpacks
    s = ds.load_sample(0)
    want, r = Letterbox((SIZE, SIZE)).apply(s.image)
    assert np.array_equal(image, want) and orig == s.image.shape[:2] and image_id == 1
    np.testing.assert_allclose(targets.boxes, s.boxes * r, rtol=1e-6)
    np.testing.assert_array_equal(targets.labels, s.labels)


def test_mixup_keeps_both_sets_of_boxes():
    cfg = AugmentConfig(img_size=(64, 64), mixup_scale=(1.0, 1.0))
    base = np.zeros((64, 64, 3), np.uint8)
    other = np.full((32, 32, 3), 200, np.uint8)
    b0 = np.array([[1, 1, 20, 20]], np.float32)
    b1 = np.array([[0, 0, 16, 16]], np.float32)
    out, boxes, labels = mixup(base, b0, np.array([0]), (other, b1, np.array([1])), np.random.default_rng(0), cfg)
    assert out.shape == (64, 64, 3) and labels.tolist() == [0, 1]
    assert boxes[1, 2] - boxes[1, 0] == pytest.approx(32)  # the 32 px image was letterboxed to 64 px
    x1, y1, x2, y2 = boxes[1].astype(int)
    assert out[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].min() == 100  # 0.5 * 0 + 0.5 * 200 under the mixed box


def test_augment_config_from_data_config():
    from cspdet.config import DataConfig

    cfg = AugmentConfig.from_config(DataConfig(img_size=[320, 256], mosaic_scale=[0.5, 1.5], degrees=0.0))
    assert cfg.img_size == (320, 256) and cfg.mosaic_scale == (0.5, 1.5) and cfg.degrees == 0.0
    with pytest.raises(TypeError, match="unknown augmentation option"):
        AugmentConfig.from_config(None, mosaic=1)


def test_warp_boxes_clipped_matches_dense_sampling():
    from cspdet.data.box_geometry import warp_boxes_clipped
    from cspdet.data.transforms import affine_matrix

    rng = np.random.default_rng(0)
    boxes = np.array([[10, 10, 60, 40], [-20, 5, 30, 90], [100, 100, 180, 170], [0, 0, 5, 5]], np.float32)
    for _ in range(20):
        m, _ = affine_matrix(rng, (64, 64), (96, 96), degrees=30, translate=0.3, scale=(0.5, 1.5), shear=5)
        got = warp_boxes_clipped(boxes, m, 96, 96)
        for box, g in zip(boxes, got):
            u, v = np.meshgrid(np.linspace(box[0], box[2], 300), np.linspace(box[1], box[3], 300))
            xy = np.stack([u.ravel(), v.ravel()], 1) @ m[:, :2].T + m[:, 2]
            xy = xy[(xy[:, 0] >= 0) & (xy[:, 0] <= 96) & (xy[:, 1] >= 0) & (xy[:, 1] <= 96)]
            if len(xy) == 0:
                assert (g[2] - g[0]) * (g[3] - g[1]) < 1.0
                continue
            want = np.concatenate([xy.min(0), xy.max(0)])
            np.testing.assert_allclose(g, want, atol=1.0)
