"""Geometric and photometric augmentation for detection (YOLOX defaults), plus eval letterboxing.

All functions work on numpy arrays: images (H, W, 3) uint8 RGB, boxes (N, 4) float32 xyxy pixels, labels
(N,) int64. Every random choice comes from the ``numpy.random.Generator`` passed in, so a sample is
reproducible from its seed (the loaders seed one generator per (seed, epoch, sample index)).

Box hygiene after every geometric step (:func:`box_candidates`): boxes are clipped to the image and a box
is dropped when, after clipping,

- its width or height is <= ``min_box_size`` pixels (default 2), or
- its area is <= ``min_area_ratio`` (default 0.1) of the area it would have had without any cropping
  (its original area times the step's scale squared) - a sliver left at a mosaic or image border, or
- its aspect ratio max(w/h, h/w) is >= ``max_aspect_ratio`` (default 20).

These are the thresholds YOLOX uses in its affine step (``box_candidates(wh_thr=2, ar_thr=20,
area_thr=0.1)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence

import albumentations as A
import cv2
import numpy as np

__all__ = [
    "AugmentConfig",
    "letterbox",
    "affine_matrix",
    "warp_boxes",
    "warp_boxes_clipped",
    "clip_boxes",
    "box_candidates",
    "mosaic",
    "random_affine",
    "mixup",
    "hsv_jitter",
    "horizontal_flip",
    "PAD_VALUE",
]

PAD_VALUE = 114  # YOLOX/Ultralytics grey for padding and affine borders


@dataclass
class AugmentConfig:
    """Training augmentation settings. Field names match :class:`cspdet.config.DataConfig`.

    ``img_size`` is (height, width) of the network input.
    """

    img_size: tuple[int, int] = (640, 640)
    mosaic_prob: float = 1.0
    mosaic_scale: tuple[float, float] = (0.1, 2.0)
    mixup_prob: float = 1.0
    mixup_scale: tuple[float, float] = (0.5, 1.5)
    degrees: float = 10.0
    translate: float = 0.1
    shear: float = 2.0
    hsv_prob: float = 1.0
    hsv_gains: tuple[float, float, float] = (5.0, 30.0, 30.0)
    """Max shift of hue (OpenCV 0..180 scale), saturation and value (0..255); each is on with p=0.5."""
    flip_prob: float = 0.5
    max_labels: int = 120
    min_box_size: float = 2.0
    min_area_ratio: float = 0.1
    max_aspect_ratio: float = 20.0

    @classmethod
    def from_config(cls, cfg: Any = None, **overrides: Any) -> "AugmentConfig":
        """Take every field present on ``cfg`` (a DataConfig, a dict or None), then ``overrides``."""
        values: dict[str, Any] = {}
        names = {f.name for f in fields(cls)}
        if cfg is not None:
            source = cfg if isinstance(cfg, dict) else {n: getattr(cfg, n) for n in names if hasattr(cfg, n)}
            values.update({k: v for k, v in source.items() if k in names})
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown augmentation option(s): {', '.join(sorted(unknown))}")
        values.update(overrides)
        for key in ("img_size", "mosaic_scale", "mixup_scale", "hsv_gains"):
            if key in values:
                v = values[key]
                values[key] = (v, v) if isinstance(v, (int, float)) else tuple(v)
        values["img_size"] = tuple(int(v) for v in values.get("img_size", cls.img_size))
        return cls(**values)


# ============================================================================================== letterbox


def letterbox(
    image: np.ndarray, size: Sequence[int], pad_value: int = PAD_VALUE
) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio so the image fits ``size``, pad bottom/right (top-left aligned).

    Args:
        image: (h, w, 3) uint8.
        size: (H, W) output size.
        pad_value: grey level of the padding.

    Returns:
        (image (H, W, 3) uint8, ratio r = min(H / h, W / w)); map boxes back to the original with ``/ r``.
    """
    out_h, out_w = int(size[0]), int(size[1])
    h, w = image.shape[:2]
    r = min(out_h / h, out_w / w)
    new_w, new_h = min(out_w, int(round(w * r))), min(out_h, int(round(h * r)))
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if (new_h, new_w) == (out_h, out_w):
        return np.ascontiguousarray(image), r
    out = np.full((out_h, out_w, 3), pad_value, dtype=np.uint8)
    out[:new_h, :new_w] = image
    return out, r


# ============================================================================================ box helpers


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """(N,) areas of (N, 4) xyxy boxes."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def clip_boxes(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
    """Clip (N, 4) xyxy boxes to [0, width] x [0, height] in place; returns ``boxes``."""
    np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
    return boxes


def box_candidates(
    boxes: np.ndarray,
    ref_areas: np.ndarray,
    min_box_size: float = 2.0,
    min_area_ratio: float = 0.1,
    max_aspect_ratio: float = 20.0,
) -> np.ndarray:
    """(N,) bool: which clipped boxes to keep (see the module docstring for the rule).

    Args:
        boxes: (N, 4) xyxy after the geometric step and clipping.
        ref_areas: (N,) area each box would have had without cropping (same pixel scale as ``boxes``).
    """
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    aspect = np.maximum(w / np.maximum(h, 1e-6), h / np.maximum(w, 1e-6))
    return (
        (w > min_box_size)
        & (h > min_box_size)
        & (w * h > min_area_ratio * np.maximum(ref_areas, 1e-6))
        & (aspect < max_aspect_ratio)
    )


def warp_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map (N, 4) xyxy boxes through a 2x3 (or 3x3) affine matrix; returns the (N, 4) axis-aligned boxes
    enclosing the 4 transformed corners."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4).astype(np.float32)
    m = np.asarray(matrix, np.float64)[:2]
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 4, 2).astype(np.float64)  # (N, 4, 2)
    xy = corners @ m[:, :2].T + m[:, 2]
    out = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)
    return out.astype(np.float32)


def warp_boxes_clipped(boxes: np.ndarray, matrix: np.ndarray, height: float, width: float) -> np.ndarray:
    """Map (N, 4) xyxy boxes through an affine matrix and return, for each, the axis-aligned box of the
    part of the transformed rectangle that lies inside the (height, width) image.

    Clipping the enclosing box of the 4 corners (what :func:`warp_boxes` + :func:`clip_boxes` give) is too
    large when a rotated box is cut by the border: its clipped corner box can cover mostly background.
    Here the visible polygon's vertices are collected exactly: transformed corners inside the image, the
    crossings of the rectangle's edges with the image borders, and the image corners inside the rectangle.
    Boxes with no visible part come back with zero size (so :func:`box_candidates` drops them).
    """
    n = len(boxes)
    if n == 0:
        return boxes.reshape(0, 4).astype(np.float32)
    m = np.asarray(matrix, np.float64)[:2]
    b = boxes.astype(np.float64)
    corners = b[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(n, 4, 2) @ m[:, :2].T + m[:, 2]  # (N, 4, 2)
    eps = 1e-6
    pts = [corners]
    valid = [(corners[..., 0] >= -eps) & (corners[..., 0] <= width + eps)
             & (corners[..., 1] >= -eps) & (corners[..., 1] <= height + eps)]  # fmt: skip
    p, q = corners, np.roll(corners, -1, axis=1)  # the 4 edges p -> q
    d = q - p
    for axis, value in ((0, 0.0), (0, width), (1, 0.0), (1, height)):
        other = 1 - axis
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (value - p[..., axis]) / d[..., axis]
            cross = p + t[..., None] * d  # edges parallel to the border give inf/nan: masked below
        cross[..., axis] = value
        limit = height if other == 1 else width
        ok = (t >= 0) & (t <= 1) & (cross[..., other] >= -eps) & (cross[..., other] <= limit + eps)
        pts.append(np.nan_to_num(cross))
        valid.append(ok & np.isfinite(t))
    # image corners that fall inside a box: test them in the box's own (untransformed) frame
    inv = cv2.invertAffineTransform(m)
    img_corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    src = img_corners @ inv[:, :2].T + inv[:, 2]  # (4, 2)
    inside = ((src[None, :, 0] >= b[:, None, 0]) & (src[None, :, 0] <= b[:, None, 2])
              & (src[None, :, 1] >= b[:, None, 1]) & (src[None, :, 1] <= b[:, None, 3]))  # fmt: skip
    pts.append(np.broadcast_to(img_corners, (n, 4, 2)))
    valid.append(inside)
    allp = np.concatenate(pts, axis=1)  # (N, K, 2)
    ok = np.concatenate(valid, axis=1)  # (N, K)
    lo = np.where(ok[..., None], allp, np.inf).min(axis=1)
    hi = np.where(ok[..., None], allp, -np.inf).max(axis=1)
    out = np.concatenate([lo, hi], axis=1)
    out[~ok.any(axis=1)] = 0.0
    np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
    return out.astype(np.float32)


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high)) if high > low else float(low)


# ================================================================================================ affine


def affine_matrix(
    rng: np.random.Generator,
    in_center: tuple[float, float],
    out_size: Sequence[int],
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.1, 2.0),
    shear: float = 2.0,
) -> tuple[np.ndarray, float]:
    """A random affine transform: rotate by U(-degrees, degrees), scale by U(*scale), shear each axis by
    U(-shear, shear) degrees, all about ``in_center`` (x, y), which then lands on the output centre shifted
    by U(-translate, translate) x the output size.

    Returns:
        (M (2, 3) float64 for cv2.warpAffine, the isotropic scale factor).
    """
    out_h, out_w = out_size
    angle = _uniform(rng, -degrees, degrees)
    s = _uniform(rng, *scale)
    rot = cv2.getRotationMatrix2D((0.0, 0.0), angle, s)  # (2, 3), rotation+scale about the origin
    shx = math.tan(math.radians(_uniform(rng, -shear, shear)))
    shy = math.tan(math.radians(_uniform(rng, -shear, shear)))
    lin = np.array([[1.0, shx], [shy, 1.0]]) @ rot[:, :2]
    tx = out_w * (0.5 + _uniform(rng, -translate, translate))
    ty = out_h * (0.5 + _uniform(rng, -translate, translate))
    center = np.asarray(in_center, np.float64)
    m = np.empty((2, 3), np.float64)
    m[:, :2] = lin
    m[:, 2] = np.array([tx, ty]) - lin @ center
    return m, s


def random_affine(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    ref_areas: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    scale: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random rotation/scale/shear/translation of ``image`` into ``cfg.img_size`` (cv2.warpAffine, border
    114); boxes follow, are clipped and filtered (``ref_areas``: their uncropped areas before the warp)."""
    out_h, out_w = cfg.img_size
    h, w = image.shape[:2]
    m, s = affine_matrix(
        rng, (w / 2, h / 2), (out_h, out_w), cfg.degrees, cfg.translate,
        scale if scale is not None else cfg.mosaic_scale, cfg.shear,
    )  # fmt: skip
    out = cv2.warpAffine(
        image, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
        borderValue=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
    )  # fmt: skip
    if len(boxes):
        boxes = warp_boxes_clipped(boxes, m, out_h, out_w)
        keep = box_candidates(boxes, ref_areas * s * s, cfg.min_box_size, cfg.min_area_ratio, cfg.max_aspect_ratio)
        boxes, labels = boxes[keep], labels[keep]
    return out, boxes, labels


# ================================================================================================ mosaic


def _resize_ratio(image: np.ndarray, r: float) -> np.ndarray:
    if r == 1.0:
        return image
    h, w = image.shape[:2]
    # INTER_LINEAR also when shrinking (as YOLOX): INTER_AREA is several times slower for a small gain
    return cv2.resize(image, (max(1, int(round(w * r))), max(1, int(round(h * r)))), interpolation=cv2.INTER_LINEAR)


def mosaic(
    samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    rng: np.random.Generator,
    out_size: Sequence[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tile 4 images around a random centre on a (2H, 2W) canvas filled with 114.

    Each image is first resized to fit (H, W) keeping its ratio; image 0 goes top-left of the centre,
    1 top-right, 2 bottom-left, 3 bottom-right, each cut at the canvas border. The centre is drawn from
    U(0.5, 1.5) x (W, H).

    Args:
        samples: 4 (image (h, w, 3) uint8, boxes (N, 4) xyxy, labels (N,)).
        out_size: (H, W).

    Returns:
        (canvas (2H, 2W, 3) uint8, boxes clipped to the canvas, labels, ref_areas: the boxes' areas before
        clipping, for :func:`box_candidates`).
    """
    out_h, out_w = int(out_size[0]), int(out_size[1])
    canvas = np.full((2 * out_h, 2 * out_w, 3), PAD_VALUE, dtype=np.uint8)
    xc = int(_uniform(rng, 0.5 * out_w, 1.5 * out_w))
    yc = int(_uniform(rng, 0.5 * out_h, 1.5 * out_h))
    all_boxes, all_labels = [], []
    for k, (image, boxes, labels) in enumerate(samples):
        h0, w0 = image.shape[:2]
        r = min(out_h / h0, out_w / w0)
        image = _resize_ratio(image, r)
        h, w = image.shape[:2]
        # placement of the tile on the canvas (x1, y1, x2, y2), corner touching the centre
        if k == 0:
            x1, y1 = xc - w, yc - h
        elif k == 1:
            x1, y1 = xc, yc - h
        elif k == 2:
            x1, y1 = xc - w, yc
        else:
            x1, y1 = xc, yc
        cx1, cy1 = max(x1, 0), max(y1, 0)
        cx2, cy2 = min(x1 + w, 2 * out_w), min(y1 + h, 2 * out_h)
        if cx2 > cx1 and cy2 > cy1:
            canvas[cy1:cy2, cx1:cx2] = image[cy1 - y1 : cy2 - y1, cx1 - x1 : cx2 - x1]
        if len(boxes):
            sx, sy = w / w0, h / h0
            b = boxes * np.array([sx, sy, sx, sy], np.float32) + np.array([x1, y1, x1, y1], np.float32)
            all_boxes.append(b)
            all_labels.append(labels)
    if not all_boxes:
        return canvas, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0,), np.float32)
    boxes = np.concatenate(all_boxes).astype(np.float32)
    labels = np.concatenate(all_labels)
    ref = box_areas(boxes)
    clip_boxes(boxes, 2 * out_h, 2 * out_w)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return canvas, boxes[keep], labels[keep], ref[keep]


# ================================================================================================= mixup


def mixup(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    other: tuple[np.ndarray, np.ndarray, np.ndarray],
    rng: np.random.Generator,
    cfg: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLOX-style MixUp: blend ``image`` 50/50 with another image that is letterboxed to the input size,
    rescaled by U(*mixup_scale), flipped with p=0.5 and randomly cropped back to the input size.

    Args:
        image: (H, W, 3) uint8, already at the input size. boxes/labels: its targets.
        other: (image, boxes, labels) of the second sample at its original size.

    Returns:
        (blended image (H, W, 3) uint8, concatenated boxes, labels).
    """
    out_h, out_w = image.shape[:2]
    o_img, o_boxes, o_labels = other
    jit = _uniform(rng, *cfg.mixup_scale)
    flip = bool(rng.random() < 0.5)
    h0, w0 = o_img.shape[:2]
    t = min(out_h / h0, out_w / w0) * jit  # letterbox ratio, then the jitter
    resized = _resize_ratio(o_img, t)
    rh, rw = resized.shape[:2]
    # the letterboxed+jittered frame is (int(H*jit), int(W*jit)), padded to at least (H, W)
    frame_h, frame_w = int(out_h * jit), int(out_w * jit)
    pad_h, pad_w = max(frame_h, out_h), max(frame_w, out_w)
    y_off = int(rng.integers(0, pad_h - out_h)) if pad_h > out_h else 0
    x_off = int(rng.integers(0, pad_w - out_w)) if pad_w > out_w else 0
    img_x = frame_w - rw if flip else 0  # flipping the frame moves the image to its right edge
    if flip:
        resized = resized[:, ::-1]
    layer = np.full((out_h, out_w, 3), PAD_VALUE, dtype=np.uint8)
    # intersection of the image rectangle (in frame coords) with the crop window
    x1, y1 = max(img_x, x_off), max(0, y_off)
    x2, y2 = min(img_x + rw, x_off + out_w), min(rh, y_off + out_h)
    if x2 > x1 and y2 > y1:
        layer[y1 - y_off : y2 - y_off, x1 - x_off : x2 - x_off] = resized[y1:y2, x1 - img_x : x2 - img_x]
    blended = cv2.addWeighted(image, 0.5, layer, 0.5, 0.0)
    if len(o_boxes):
        sx, sy = rw / w0, rh / h0
        b = o_boxes * np.array([sx, sy, sx, sy], np.float32)
        if flip:
            b = np.stack([img_x + rw - b[:, 2], b[:, 1], img_x + rw - b[:, 0], b[:, 3]], axis=1)
        b = b - np.array([x_off, y_off, x_off, y_off], np.float32)
        ref = box_areas(b)
        clip_boxes(b, out_h, out_w)
        keep = box_candidates(b, ref, cfg.min_box_size, cfg.min_area_ratio, cfg.max_aspect_ratio)
        boxes = np.concatenate([boxes, b[keep].astype(np.float32)])
        labels = np.concatenate([labels, o_labels[keep]])
    return blended, boxes, labels


# ========================================================================================== photometric

_HSV = A.HueSaturationValue(p=1.0)  # albumentations' HSV shift (hue mod 180, S/V clipped); params from us


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, gains: Sequence[float] = (5, 30, 30)) -> np.ndarray:
    """YOLOX HSV augmentation: each of hue/sat/value is shifted with p=0.5 by U(-gain, gain).

    Uses albumentations' HueSaturationValue with shifts drawn from ``rng`` (reproducible). Returns a new
    array (or ``image`` itself when no channel is shifted).
    """
    shifts = rng.uniform(-1.0, 1.0, 3) * np.asarray(gains, np.float64) * rng.integers(0, 2, 3)
    h, s, v = (int(round(x)) for x in shifts)
    if h == 0 and s == 0 and v == 0:
        return image
    return _HSV.apply(image, hue_shift=h, sat_shift=s, val_shift=v)


def horizontal_flip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: (W, boxes) -> x' = W - x."""
    w = image.shape[1]
    image = cv2.flip(image, 1)
    if len(boxes):
        boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
    return image, boxes


# ================================================================================ the training pipeline

LoadFn = Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def train_sample(
    index: int,
    num_samples: int,
    load: LoadFn,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    strong: bool = True,
    pick_mixup: Callable[[np.random.Generator], int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full training transform of one sample.

    strong (mosaic on): Mosaic (p=mosaic_prob) -> RandomAffine -> MixUp (p=mixup_prob); otherwise (and in
    the final no-aug epochs) a letterbox. Then HSV (p=hsv_prob) and horizontal flip (p=flip_prob).

    Args:
        index: the sample; mosaic partners are drawn uniformly from ``range(num_samples)``.
        load: index -> (image (h, w, 3) uint8, boxes (N, 4) xyxy px, labels (N,)); must not modify shared
            arrays in place (this function never writes into what ``load`` returns).
        pick_mixup: draws the MixUp partner index (default: uniform).

    Returns:
        (image (H, W, 3) uint8 with (H, W) = cfg.img_size, boxes (N, 4) float32 xyxy px, labels (N,) int64),
        at most ``cfg.max_labels`` boxes.
    """
    out_h, out_w = cfg.img_size
    if strong and cfg.mosaic_prob > 0 and rng.random() < cfg.mosaic_prob:
        idx = [index, *(int(i) for i in rng.integers(0, num_samples, 3))]
        canvas, boxes, labels, ref = mosaic([load(i) for i in idx], rng, (out_h, out_w))
        image, boxes, labels = random_affine(canvas, boxes, labels, ref, rng, cfg)
        if cfg.mixup_prob > 0 and rng.random() < cfg.mixup_prob:
            j = pick_mixup(rng) if pick_mixup is not None else int(rng.integers(0, num_samples))
            image, boxes, labels = mixup(image, boxes, labels, load(j), rng, cfg)
    else:
        src, boxes, labels = load(index)
        image, r = letterbox(src, (out_h, out_w))
        if image is src:
            image = image.copy()  # never hand out (and later modify) a cached array
        boxes = boxes * np.float32(r)
        if len(boxes):
            keep = box_candidates(boxes, box_areas(boxes), cfg.min_box_size, 0.0, cfg.max_aspect_ratio)
            boxes, labels = boxes[keep], labels[keep]
    if cfg.hsv_prob > 0 and rng.random() < cfg.hsv_prob:
        image = hsv_jitter(image, rng, cfg.hsv_gains)
    if cfg.flip_prob > 0 and rng.random() < cfg.flip_prob:
        image, boxes = horizontal_flip(image, boxes)
    if len(boxes) > cfg.max_labels:
        boxes, labels = boxes[: cfg.max_labels], labels[: cfg.max_labels]
    return image, boxes.astype(np.float32, copy=False), labels.astype(np.int64, copy=False)
