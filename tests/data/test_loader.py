"""Loaders: batch dict shapes/dtypes, padding + mask, seeding across workers, epochs, close_mosaic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cspdet.data import (
    DatasetProblem,
    DetectionItem,
    build_dataset,
    build_train_loader,
    build_val_loader,
    collate_detection,
)
from cspdet.det import ImageTargets, Targets

CFG = {"img_size": [96, 128], "workers": 0}


def _ds(coco_dir):
    return build_dataset(coco_dir / "dataset.yaml", "train")


def test_train_batch_format(coco_dir):
    loader = build_train_loader(_ds(coco_dir), CFG, batch_size=3, seed=0)
    batch = next(iter(loader))
    assert batch["images"].dtype == torch.uint8 and batch["images"].shape == (3, 3, 96, 128)
    assert batch["images"].is_contiguous()
    t = batch["targets"]
    assert isinstance(t, Targets) and t.batch_size == 3
    _, m, four = t.boxes.shape
    assert four == 4 and t.boxes.dtype == torch.float32 and t.labels.dtype == torch.int64
    assert t.mask.dtype == torch.bool and t.mask.shape == (3, m) and batch["target_mask"] is t.mask
    assert batch["image_ids"].dtype == torch.int64 and sorted(batch["image_ids"].tolist()) == [1, 2, 3]
    assert batch["ratios"].dtype == torch.float32 and (batch["ratios"] == 1).all()
    assert batch["orig_sizes"].dtype == torch.int64 and batch["orig_sizes"].shape == (3, 2)
    # padding rows are all zero; real rows have positive-size boxes
    assert (t.boxes[~t.mask] == 0).all() and (t.labels[~t.mask] == 0).all()
    real = t.boxes[t.mask]
    assert ((real[:, 2] > real[:, 0]) & (real[:, 3] > real[:, 1])).all()
    # the real boxes of each image come first, as many as the sample had
    assert torch.equal(t.mask, torch.arange(m) < t.num_boxes[:, None])


def test_collate_converts_hwc_to_chw_and_allows_no_boxes():
    img = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    batch = collate_detection([(img, ImageTargets.empty(), 7, 0.5, (8, 12))])
    assert torch.equal(batch["images"][0], torch.from_numpy(img).permute(2, 0, 1))
    assert batch["targets"].boxes.shape == (1, 0, 4) and batch["targets"].mask.shape == (1, 0)
    assert batch["orig_sizes"].tolist() == [[8, 12]] and batch["ratios"].tolist() == [0.5]


def test_val_batch_letterbox(coco_dir):
    ds = _ds(coco_dir)
    batch = next(iter(build_val_loader(ds, [96, 128], batch_size=3, workers=0)))
    assert batch["images"].shape == (3, 3, 96, 128)
    assert batch["image_ids"].tolist() == [1, 2, 3]
    assert batch["orig_sizes"].tolist() == [[64, 96], [80, 64], [48, 48]]
    r = batch["ratios"]
    assert torch.allclose(r, torch.tensor([4 / 3, 1.2, 2.0]))
    # boxes / ratio == original boxes
    s = ds.load_sample(0)
    got = batch["targets"].per_image()[0]
    assert torch.allclose(got.boxes / r[0], torch.from_numpy(s.boxes), atol=1e-4)
    np.testing.assert_array_equal(got.labels.numpy(), s.labels)


def test_collate_pads_per_image_targets_and_reads_the_old_tuples():
    img = np.zeros((4, 6, 3), np.uint8)
    a = ImageTargets(np.array([[1, 2, 3, 4], [0, 0, 5, 5]], np.float32), np.array([2, 0]))
    problem = DatasetProblem("unreadable_image", "x.jpg", "cannot decode")
    old = np.array([[1, 10, 20, 30, 40]], np.float32)  # a dataset written for the (N, 5) tuple layout
    batch = collate_detection([DetectionItem(img, a, 1, 1.0, (4, 6)),
                               DetectionItem(img, ImageTargets.empty(), 2, 0.5, (8, 12), problems=(problem,)),
                               (img, old, 3, 1.0, (4, 6))])
    t = batch["targets"]
    assert t.boxes.shape == (3, 2, 4) and t.num_boxes.tolist() == [2, 0, 1]
    assert t.boxes[0].tolist() == [[1, 2, 3, 4], [0, 0, 5, 5]] and t.labels[0].tolist() == [2, 0]
    assert t.boxes[2, 0].tolist() == [10, 20, 30, 40] and t.labels[2].tolist() == [1, 0]
    assert not t.mask[1].any() and (t.boxes[1] == 0).all()
    assert batch["image_ids"].tolist() == [1, 2, 3] and batch["ratios"].tolist() == [1.0, 0.5, 1.0]
    assert batch["orig_sizes"].tolist() == [[4, 6], [8, 12], [4, 6]] and batch["problems"] == [problem]
    with pytest.raises(ValueError, match=r"\(N, 5\).*shape \(1, 6\)"):
        collate_detection([(img, np.zeros((1, 6), np.float32), 1, 1.0, (4, 6))])
    with pytest.raises(ValueError, match="a sample must be a DetectionItem .* tuple of length 3"):
        collate_detection([(img, old, 1)])
    # an item still reads as the tuple of earlier versions
    _, targets, _, _, _, problems = DetectionItem(img, a, 1, 1.0, (4, 6), (problem,))
    assert targets is a and problems == [problem] and len(DetectionItem(img, a, 1, 1.0, (4, 6))) == 5


def _epoch(loader, epoch):
    loader.dataset.set_epoch(epoch)
    return [b for b in loader]


def test_reproducible_and_independent_of_workers(coco_dir):
    ds = _ds(coco_dir)
    l0 = build_train_loader(ds, CFG, batch_size=2, seed=5)
    l1 = build_train_loader(ds, {**CFG, "workers": 1}, batch_size=2, seed=5)
    a, b = _epoch(l0, 3), _epoch(l1, 3)
    again = _epoch(l0, 3)
    for x, y, z in zip(a, b, again):
        for key in x:
            if key == "targets":
                assert x[key].equal(y[key]) and x[key].equal(z[key]), key
            else:
                assert torch.equal(x[key], y[key]) and torch.equal(x[key], z[key]), key
    other = _epoch(l1, 4)  # persistent worker must see the new epoch
    assert not all(torch.equal(x["images"], y["images"]) for x, y in zip(a, other))


def test_close_mosaic_reaches_persistent_workers(coco_dir):
    ds = _ds(coco_dir)
    loader = build_train_loader(ds, {**CFG, "workers": 1, "flip_prob": 0.0, "hsv_prob": 0.0}, batch_size=3, seed=0)
    _epoch(loader, 0)
    loader.dataset.close_mosaic()
    batch = _epoch(loader, 1)[0]
    # letterbox only: each image is its own letterboxed original, with pad 114 at bottom/right
    for k, image_id in enumerate(batch["image_ids"].tolist()):
        h, w = ds.load_sample(ds.image_ids.index(image_id)).image.shape[:2]
        r = min(96 / h, 128 / w)
        nh, nw = round(h * r), round(w * r)
        img = batch["images"][k]
        if nh < 96:
            assert (img[:, nh:, :] == 114).all()
        if nw < 128:
            assert (img[:, :, nw:] == 114).all()


def test_distributed_shards(coco_dir):
    ds = _ds(coco_dir)
    ids = []
    for rank in range(2):
        loader = build_train_loader(ds, CFG, batch_size=4, seed=0, rank=rank, world_size=2)
        loader.dataset.set_epoch(0)
        ids.append([i for b in loader for i in b["image_ids"].tolist()])
    assert len(ids[0]) == len(ids[1]) == 2  # 3 images padded to 4, split in two
    assert set(ids[0]) | set(ids[1]) == {1, 2, 3}
