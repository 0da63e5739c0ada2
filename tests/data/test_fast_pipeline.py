"""The fast training pipeline gives the same augmentations as the straightforward one.

- HSV via per-plane tables is bit-exact with albumentations' HueSaturationValue;
- the fused mosaic+affine equals drawing the mosaic canvas and warping it (boxes exactly, pixels except tile
  seams);
- MixUp copying only the visible crop equals resize + flip + pad + crop exactly (3 and 4 channels);
- the horizontal flip folded into the mosaic/MixUp warps equals flipping afterwards;
- the vectorised clipped box warp equals the straightforward per-border version;
- partner pools: keys carry their block, each image decoded about once per epoch, partners stay in the pool;
- reduced-size JPEG decoding gives the same boxes and nearly the same pixels as a full decode + resize.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest

from cspdet.data import AugmentConfig, TrainDataset, build_dataset, build_train_loader
from cspdet.data.datasets import DetectionDataset
from cspdet.data.sampler import EpochSampler
from cspdet.data.photometric import shift_hsv
from cspdet.data.records import ImageRecord
from cspdet.data.transforms import (
    PAD_VALUE,
    _affine_boxes,
    _mosaic_layout,
    _resize_ratio,
    _visible,
    affine_matrix,
    fit_size,
    mixup,
    mosaic_affine,
    warp_into,
)


def _photo(seed: int, h: int, w: int, cell: int = 8) -> np.ndarray:
    """A smooth random RGB image with detail at ``cell`` px (fine enough that interpolation differences
    would show)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // cell, 2), max(w // cell, 2), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize("channels", [3, 4])
def test_shift_hsv_matches_albumentations(channels):
    hsv = A.HueSaturationValue(p=1.0)
    rng = np.random.default_rng(0)
    for k in range(12):
        image = _photo(k, 40, 56)
        image[:5] = 128  # grey pixels (S = 0) must stay grey
        h, s, v = int(rng.integers(-5, 6)), int(rng.integers(-30, 31)), int(rng.integers(-30, 31))
        h, s, v = (h if k % 3 else 0), (s if k % 4 else 0), v
        src = cv2.cvtColor(image, cv2.COLOR_RGB2RGBA) if channels == 4 else image
        assert np.array_equal(shift_hsv(src, h, s, v), hsv.apply(image, hue_shift=h, sat_shift=s, val_shift=v))


def test_warp_into_writes_only_covered_pixels_in_place():
    dst = np.zeros((50, 60, 4), np.uint8)
    warp_into(dst, np.full((10, 10, 4), 200, np.uint8), np.array([[1.0, 0, 20], [0, 1.0, 5]]))
    assert (dst[5:15, 20:30] == 200).all() and int(dst.sum()) == 200 * 10 * 10 * 4


def _tiles(seed: int, size, channels=3):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):
        h, w = int(rng.integers(30, 90)), int(rng.integers(30, 90))
        img = _photo(int(rng.integers(1 << 30)), h, w)
        r, _, _ = fit_size(h, w, size)
        img = _resize_ratio(img, r)
        if channels == 4:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2RGBA)
        x1, y1 = rng.uniform(0, w * r / 2), rng.uniform(0, h * r / 2)
        boxes = np.array([[x1, y1, x1 + 12, y1 + 10]], np.float32)
        out.append((img, boxes, np.array([int(rng.integers(0, 3))])))
    return out


def _mosaic_canvas_reference(samples, rng, out_size):
    """The straightforward mosaic that :func:`mosaic_affine` never draws: the 4 tiles on a (2H, 2W) canvas
    filled with 114. Returns (canvas, boxes clipped to it, labels, the boxes' areas before clipping)."""
    out_h, out_w = int(out_size[0]), int(out_size[1])
    tiles, boxes, labels, ref = _mosaic_layout(samples, rng, (out_h, out_w))
    canvas = np.full((2 * out_h, 2 * out_w, tiles[0][0].shape[2]), PAD_VALUE, dtype=np.uint8)
    for tile, x1, y1 in tiles:
        part, cx1, cy1 = _visible(tile, x1, y1, 2 * out_h, 2 * out_w)
        canvas[cy1 : cy1 + part.shape[0], cx1 : cx1 + part.shape[1]] = part
    return canvas, boxes, labels, ref


def _random_affine_reference(image, boxes, labels, ref_areas, rng, cfg):
    """The straightforward random affine of a whole (canvas) image into ``cfg.img_size`` (cv2.warpAffine,
    border 114); boxes follow, are clipped and filtered (``ref_areas``: their uncropped areas)."""
    out_h, out_w = cfg.img_size
    h, w = image.shape[:2]
    m, s = affine_matrix(rng, (w / 2, h / 2), (out_h, out_w), cfg.degrees, cfg.translate, cfg.mosaic_scale, cfg.shear)
    out = cv2.warpAffine(
        image, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
        borderValue=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
    )  # fmt: skip
    boxes, labels = _affine_boxes(boxes, labels, ref_areas, m, s, (out_h, out_w), cfg)
    return out, boxes, labels


@pytest.mark.parametrize("channels", [3, 4])
def test_fused_mosaic_affine_equals_canvas_then_affine(channels):
    cfg = AugmentConfig(img_size=(64, 80))
    seams = []
    for seed in range(20):
        samples = _tiles(seed, cfg.img_size, channels)
        ra, rb = np.random.default_rng(seed), np.random.default_rng(seed)
        canvas, boxes, labels, ref = _mosaic_canvas_reference(samples, ra, cfg.img_size)
        want, want_boxes, want_labels = _random_affine_reference(canvas, boxes, labels, ref, ra, cfg)
        got, got_boxes, got_labels = mosaic_affine(samples, rb, cfg)
        assert got.shape == want.shape == (64, 80, channels)
        assert np.array_equal(got_boxes, want_boxes) and np.array_equal(got_labels, want_labels)
        assert ra.random() == rb.random()  # the same random draws
        diff = np.abs(got[..., :3].astype(int) - want[..., :3]).max(axis=2)  # the 4th channel is unused
        seams.append((diff > 0).mean())
    assert np.mean(seams) < 0.03  # only the one-pixel lines where two tiles meet


@pytest.mark.parametrize("channels", [3, 4])
def test_mixup_crop_copy_equals_resize_flip_crop(channels):
    cfg = AugmentConfig(img_size=(64, 64))
    base = _photo(1, 64, 64)
    if channels == 4:
        base = cv2.cvtColor(base, cv2.COLOR_RGB2RGBA)
    for seed in range(40):
        other = _photo(seed + 10, 40 + seed % 20, 70 - seed % 20)
        if channels == 4:
            other = cv2.cvtColor(other, cv2.COLOR_RGB2RGBA)
        boxes = np.array([[3, 4, 30, 35]], np.float32)
        rng = np.random.default_rng(seed)
        got, got_boxes, _ = mixup(base, np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                                  (other, boxes, np.array([1])), rng, cfg)  # fmt: skip
        # reference: the straightforward resize + flip + crop, with the same draws
        rng = np.random.default_rng(seed)
        jit, flip = rng.uniform(*cfg.mixup_scale), rng.random() < 0.5
        h0, w0 = other.shape[:2]
        t = min(64 / h0, 64 / w0) * jit
        resized = _resize_ratio(other, t)
        rh, rw = resized.shape[:2]
        fh, fw = int(64 * jit), int(64 * jit)
        ph, pw = max(fh, 64), max(fw, 64)
        y_off = int(rng.integers(0, ph - 64)) if ph > 64 else 0
        x_off = int(rng.integers(0, pw - 64)) if pw > 64 else 0
        img_x = fw - rw if flip else 0
        if flip:
            resized = resized[:, ::-1]
        layer = np.full((64, 64, channels), 114, np.uint8)  # the crop window of the frame, image pasted in it
        x1, y1, x2, y2 = max(img_x, x_off), max(0, y_off), min(img_x + rw, x_off + 64), min(rh, y_off + 64)
        if x2 > x1 and y2 > y1:
            layer[y1 - y_off : y2 - y_off, x1 - x_off : x2 - x_off] = resized[y1:y2, x1 - img_x : x2 - img_x]
        want = cv2.addWeighted(base, 0.5, layer, 0.5, 0.0)
        assert np.array_equal(got, want), seed
        if len(got_boxes):
            x1 = (img_x + rw - boxes[0, 2] * rw / w0 if flip else boxes[0, 0] * rw / w0) - x_off
            assert got_boxes[0, 0] == pytest.approx(max(x1, 0), abs=1e-3)


def test_sampler_pools_cover_the_epoch_in_blocks(coco_dir):
    ds = build_dataset(coco_dir / "dataset.yaml", "train")
    train = TrainDataset(ds, AugmentConfig(img_size=(32, 32)), seed=0)
    keys = list(EpochSampler(train, seed=0, pool=2))
    assert sorted(k[0] for k in keys) == list(range(len(ds)))
    for index, _, _, pool in keys:
        assert index in pool and 1 <= len(pool) <= 3
    assert [k for k in EpochSampler(train, seed=0, pool=0)] == [k[:3] for k in keys]


def test_partners_come_from_the_pool_and_are_decoded_once(coco_dir, monkeypatch):
    ds = build_dataset(coco_dir / "dataset.yaml", "train")
    train = TrainDataset(ds, AugmentConfig(img_size=(32, 32)), seed=0)
    decoded = []
    real = ds.load_sample
    monkeypatch.setattr(ds, "load_sample", lambda i: decoded.append(i) or real(i))
    pool = (0, 2)
    for epoch in range(4):
        for index in pool:
            image = train[(index, epoch, True, pool)].image
            assert image.shape == (32, 32, 3)
    assert sorted(decoded) == [0, 2]  # 8 samples x 5 images, 2 decodes: all from the buffer
    assert train[(0, 1, True, pool)].image.tobytes() == TrainDataset(ds, train.cfg, seed=0)[(0, 1, True, pool)].image.tobytes()


def test_loader_decodes_about_once_per_image(coco_dir, monkeypatch):
    ds = build_dataset(coco_dir / "dataset.yaml", "train")
    loader = build_train_loader(ds, {"img_size": [32, 32], "workers": 0}, batch_size=2, seed=0)
    decoded = []
    real = ds.load_sample
    monkeypatch.setattr(ds, "load_sample", lambda i: decoded.append(i) or real(i))
    for epoch in range(3):
        loader.dataset.set_epoch(epoch)
        for _ in loader:
            pass
    assert len(decoded) == len(ds)  # pool (64) > dataset: every image decoded once, then buffered


def test_reduced_jpeg_decode_matches_full_decode(tmp_path):
    h, w = 400, 600
    image = _photo(3, h, w, cell=40)  # detail coarser than the 64 px output: no aliasing either way
    path = tmp_path / "big.jpg"
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    boxes = np.array([[10, 20, 300, 350]], np.float32)
    rec = ImageRecord(str(path), 1, boxes, np.array([0]), height=h, width=w)
    bad = ImageRecord(str(path), 2, boxes, np.array([0]), height=h + 1, width=w)  # wrong size on record
    ds = DetectionDataset([rec, bad], ["a"])
    train = TrainDataset(ds, AugmentConfig(img_size=(64, 64)), seed=0)  # 600 px -> 64: 1/8 decode
    fast, fast_boxes, _, orig = train._decode_fitted(0)
    full = ds.load_sample(0)
    r, nh, nw = fit_size(h, w, (64, 64))
    want = cv2.resize(full.image, (nw, nh), interpolation=cv2.INTER_AREA)  # DCT scaling averages like AREA
    assert fast.shape == (nh, nw, 4) and orig == (h, w)
    np.testing.assert_allclose(fast_boxes, full.boxes * np.array([nw / w, nh / h] * 2, np.float32), rtol=1e-6)
    assert np.abs(fast[..., :3].astype(int) - want).mean() < 3
    # a record whose size disagrees with the file falls back to the full decode (which reports it)
    with pytest.warns(Warning, match="size_mismatch"):
        _, _, _, orig_bad = train._decode_fitted(1)
    assert orig_bad == (h, w) and "size_mismatch" in str(ds.skipped.summary())


# --------------------------------------------------------------------------- folded flip, box maths


@pytest.mark.parametrize("channels", [3, 4])
def test_flip_folded_into_mosaic_warps_equals_flip_after(channels):
    from cspdet.data.transforms import horizontal_flip

    cfg = AugmentConfig(img_size=(64, 80))
    for seed in range(20):
        samples = _tiles(seed, cfg.img_size, channels)
        ra, rb = np.random.default_rng(seed), np.random.default_rng(seed)
        plain, plain_boxes, plain_labels = mosaic_affine(samples, ra, cfg)
        want, want_boxes = horizontal_flip(plain, plain_boxes)
        got, got_boxes, got_labels = mosaic_affine(samples, rb, cfg, flip=True)
        assert ra.random() == rb.random()  # the flip draws nothing
        assert np.array_equal(got_labels, plain_labels)
        np.testing.assert_allclose(got_boxes, want_boxes, atol=1e-4)
        # the same sample points up to OpenCV's 1/32 px quantisation of the warp coordinates: values differ
        # by a level or two, except a few pixels on a tile's edge that fall on the other side of it
        # (~0.01% of the pixels on average)
        diff = np.abs(got.astype(int) - want).max(axis=2)
        assert (diff > 2).mean() < 0.005 and diff.mean() < 0.5, seed


def test_flip_folded_into_mixup_equals_flip_after():
    from cspdet.data.transforms import horizontal_flip

    cfg = AugmentConfig(img_size=(64, 64))
    base = _photo(1, 64, 64)
    base_boxes = np.array([[2, 3, 20, 30]], np.float32)
    for seed in range(40):
        other = _photo(seed + 10, 40 + seed % 20, 70 - seed % 20)
        boxes = np.array([[3, 4, 30, 35], [50, 2, 60, 30]], np.float32)
        plain, plain_boxes, plain_labels = mixup(base, base_boxes, np.array([0]), (other, boxes, np.array([1, 2])),
                                                 np.random.default_rng(seed), cfg)  # fmt: skip
        want, want_boxes = horizontal_flip(plain, plain_boxes)
        fbase, fboxes = horizontal_flip(base, base_boxes)  # mixup's input is already flipped
        got, got_boxes, got_labels = mixup(fbase, fboxes, np.array([0]), (other, boxes, np.array([1, 2])),
                                           np.random.default_rng(seed), cfg, flip_output=True)  # fmt: skip
        assert np.array_equal(got_labels, plain_labels)
        np.testing.assert_allclose(got_boxes, want_boxes, atol=1e-4)
        assert np.array_equal(got, want), seed  # a copy, not a warp: exactly the mirror


def _warp_boxes_clipped_reference(boxes, m, height, width):
    """The straightforward per-border version that :func:`warp_boxes_clipped` replaced."""
    n = len(boxes)
    b = boxes.astype(np.float64)
    corners = b[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(n, 4, 2) @ m[:, :2].T + m[:, 2]
    eps = 1e-6
    pts = [corners]
    valid = [(corners[..., 0] >= -eps) & (corners[..., 0] <= width + eps)
             & (corners[..., 1] >= -eps) & (corners[..., 1] <= height + eps)]  # fmt: skip
    p, d = corners, np.roll(corners, -1, axis=1) - corners
    for axis, value in ((0, 0.0), (0, width), (1, 0.0), (1, height)):
        other = 1 - axis
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (value - p[..., axis]) / d[..., axis]
            cross = p + t[..., None] * d
        cross[..., axis] = value
        limit = height if other == 1 else width
        ok = (t >= 0) & (t <= 1) & (cross[..., other] >= -eps) & (cross[..., other] <= limit + eps)
        pts.append(np.nan_to_num(cross))
        valid.append(ok & np.isfinite(t))
    inv = cv2.invertAffineTransform(m)
    img_corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    src = img_corners @ inv[:, :2].T + inv[:, 2]
    inside = ((src[None, :, 0] >= b[:, None, 0]) & (src[None, :, 0] <= b[:, None, 2])
              & (src[None, :, 1] >= b[:, None, 1]) & (src[None, :, 1] <= b[:, None, 3]))  # fmt: skip
    pts.append(np.broadcast_to(img_corners, (n, 4, 2)))
    valid.append(inside)
    allp, ok = np.concatenate(pts, axis=1), np.concatenate(valid, axis=1)
    lo, hi = np.where(ok[..., None], allp, np.inf).min(1), np.where(ok[..., None], allp, -np.inf).max(1)
    out = np.concatenate([lo, hi], 1)
    out[~ok.any(axis=1)] = 0.0
    np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
    return out.astype(np.float32)


def test_vectorised_warp_boxes_clipped_equals_reference():
    from cspdet.data.box_geometry import warp_boxes_clipped
    from cspdet.data.transforms import affine_matrix

    rng = np.random.default_rng(0)
    for it in range(400):
        n = int(rng.integers(1, 40))
        xy, wh = rng.uniform(-200, 1400, (n, 2)), rng.uniform(0, 400, (n, 2))
        if it % 7 == 0:
            wh[: n // 2, 0] = 0  # degenerate boxes: edges parallel to borders, zero-length edges
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        degrees = (0, 10, 45, 90)[it % 4]
        m, _ = affine_matrix(rng, (640, 640), (640, 480), degrees=degrees, translate=0.2, scale=(0.1, 2), shear=2)
        if it % 11 == 0:
            m = np.array([[1.0, 0, 3], [0, 1.0, -7]])  # axis-aligned: every crossing on a parallel edge
        if it % 13 == 0:
            boxes = np.array([[300, 200, 340, 250]] * 3, np.float32)  # all inside: the fast path
        assert np.array_equal(warp_boxes_clipped(boxes, m, 640, 480), _warp_boxes_clipped_reference(boxes, m, 640, 480))


# ------------------------------------------------------------------------------ RAM cache of fitted images


@pytest.mark.parametrize("strong", [True, False])
def test_ram_cache_of_fitted_images_gives_the_same_samples_and_decodes_once(coco_dir, monkeypatch, strong):
    """With cache="ram" the cache holds the fitted RGBA images (decoded once per run); samples equal those
    of a disk cache, which decodes the full image and fits it for every use (no reduced JPEG decoding)."""
    import cspdet.data.cache as cache_mod

    cfg = AugmentConfig(img_size=(32, 32))
    ram = TrainDataset(build_dataset(coco_dir / "dataset.yaml", "train", cache="ram"), cfg, seed=0)
    disk = TrainDataset(build_dataset(coco_dir / "dataset.yaml", "train", cache="disk"), cfg, seed=0)
    monkeypatch.setattr(disk.dataset.cache, "directory", coco_dir / "npy-cache")
    decoded = []
    real = ram.dataset.cache.loader
    monkeypatch.setattr(ram.dataset.cache, "loader", lambda p: decoded.append(p) or real(p))
    n = len(ram)
    pool = tuple(range(n))
    for epoch in range(3):
        for i in range(n):
            a = ram[(i, epoch, strong, pool)]
            b = disk[(i, epoch, strong, pool)]
            assert np.array_equal(a.image, b.image) and a.targets.equal(b.targets)
            assert (a.image_id, a.ratio, a.orig_size, a.problems) == (b.image_id, b.ratio, b.orig_size, b.problems)
        ram._buffer.clear()  # force the cache (not the per-process buffer) to serve the next epoch
    assert sorted(decoded) == sorted({r.path for r in ram.dataset.records})  # once per image per run
    cache = ram.dataset.cache
    assert len(cache._ram) == 0 and len(cache._derived) == n  # one (fitted) form of each image
    assert isinstance(cache, cache_mod.ImageCache)


def test_loader_warms_the_ram_cache_with_fitted_images_before_workers_fork(coco_dir):
    ds = build_dataset(coco_dir / "dataset.yaml", "train", cache="ram")
    loader = build_train_loader(ds, {"img_size": [32, 32], "workers": 1}, batch_size=2, seed=0)
    assert len(ds.cache._derived) == len(ds) and not ds.cache._ram
    image, *_ = next(iter(ds.cache._derived.values()))
    assert image.shape[2] == 4 and max(image.shape[:2]) == 32
    batch = next(iter(loader))
    assert batch["images"].shape[1:] == (3, 32, 32)
