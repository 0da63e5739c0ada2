"""Geometric and photometric augmentation for detection (YOLOX defaults).

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

import cv2
import numpy as np

from .box_geometry import box_areas, box_candidates, clip_boxes, warp_boxes_clipped
from .letterbox import PAD_VALUE, Letterbox
from .photometric import hsv_jitter

__all__ = [
    "AugmentConfig",
    "affine_matrix",
    "mosaic_affine",
    "fit_size",
    "warp_into",
    "mixup",
    "horizontal_flip",
    "PAD_VALUE",
]


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
    mosaic_pool: int = 64
    """Mosaic and MixUp partners of a sample are drawn from the block of about this many consecutive
    samples of the epoch's shuffled order that contains it (0: from the whole dataset, as YOLOX). Each
    image is then decoded about once per epoch instead of 5 times, like Ultralytics' buffer of recent
    images, while every image still serves as a partner equally often (see
    :class:`~cspdet.data.sampler.EpochSampler`)."""
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


def _affine_boxes(
    boxes: np.ndarray, labels: np.ndarray, ref_areas: np.ndarray, m: np.ndarray, s: float,
    out_size: Sequence[int], cfg: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Boxes through the affine ``m`` (scale ``s``), clipped to ``out_size`` and filtered."""
    if len(boxes):
        boxes = warp_boxes_clipped(boxes, m, out_size[0], out_size[1])
        keep = box_candidates(boxes, ref_areas * s * s, cfg.min_box_size, cfg.min_area_ratio, cfg.max_aspect_ratio)
        boxes, labels = boxes[keep], labels[keep]
    return boxes, labels


def warp_into(dst: np.ndarray, src: np.ndarray, m: np.ndarray) -> None:
    """Draw ``src`` warped by the 2x3 affine ``m`` (src px -> dst px) into ``dst``, in place, leaving dst
    pixels that ``src`` does not cover untouched.

    Only the bounding rectangle of the warped ``src`` is computed (warpAffine costs per *output* pixel),
    through a view of ``dst`` and a matrix shifted by the view's integer offset, so several images can be
    composed onto one output at the cost of the area each one covers.
    """
    sh, sw = src.shape[:2]
    if sh == 0 or sw == 0:
        return
    corners = np.array([[0, 0], [sw, 0], [0, sh], [sw, sh]], np.float64) @ m[:, :2].T + m[:, 2]
    out_h, out_w = dst.shape[:2]
    # +-1 px: bilinear interpolation reaches half a pixel beyond the source rectangle
    x1, y1 = max(int(math.floor(corners[:, 0].min())) - 1, 0), max(int(math.floor(corners[:, 1].min())) - 1, 0)
    x2, y2 = min(int(math.ceil(corners[:, 0].max())) + 1, out_w), min(int(math.ceil(corners[:, 1].max())) + 1, out_h)
    if x2 <= x1 or y2 <= y1:
        return
    mk = m.copy()
    mk[:, 2] -= (x1, y1)
    roi = dst[y1:y2, x1:x2]
    # BORDER_TRANSPARENT: output pixels that map outside src keep what dst already holds (the 114 pad or a
    # neighbouring tile). OpenCV writes straight into the strided view (no copy): checked by the tests.
    cv2.warpAffine(src, mk, (x2 - x1, y2 - y1), dst=roi, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)


# ================================================================================================ mosaic


def _resize_ratio(image: np.ndarray, r: float) -> np.ndarray:
    if r == 1.0:
        return image
    h, w = image.shape[:2]
    # INTER_LINEAR also when shrinking (as YOLOX): INTER_AREA is several times slower for a small gain
    return cv2.resize(image, (max(1, int(round(w * r))), max(1, int(round(h * r)))), interpolation=cv2.INTER_LINEAR)


def fit_size(h: int, w: int, out_size: Sequence[int]) -> tuple[float, int, int]:
    """(r, new_h, new_w): the ratio and size at which an (h, w) image fits ``out_size`` keeping its aspect
    (the size mosaic tiles and MixUp images are used at; one side equals the output side exactly)."""
    r = min(out_size[0] / h, out_size[1] / w)
    return r, max(1, int(round(h * r))), max(1, int(round(w * r)))


def _mosaic_layout(
    samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    rng: np.random.Generator,
    out_size: Sequence[int],
) -> tuple[list[tuple[np.ndarray, int, int]], np.ndarray, np.ndarray, np.ndarray]:
    """Mosaic placement without drawing: tiles resized to fit (H, W), each as (tile, x1, y1) = its top-left
    corner on the (2H, 2W) canvas; and the boxes on the canvas (clipped, with their unclipped areas)."""
    out_h, out_w = int(out_size[0]), int(out_size[1])
    xc = int(_uniform(rng, 0.5 * out_w, 1.5 * out_w))
    yc = int(_uniform(rng, 0.5 * out_h, 1.5 * out_h))
    tiles, affine = [], []
    for k, (image, boxes, _) in enumerate(samples):
        h0, w0 = image.shape[:2]
        image = _resize_ratio(image, min(out_h / h0, out_w / w0))  # a no-op for pre-fitted images
        h, w = image.shape[:2]
        # image 0 top-left of the centre, 1 top-right, 2 bottom-left, 3 bottom-right
        x1 = xc - w if k in (0, 2) else xc
        y1 = yc - h if k in (0, 1) else yc
        tiles.append((image, x1, y1))
        affine.append((w / w0, h / h0, w / w0, h / h0, x1, y1, x1, y1))
    counts = [len(b) for _, b, _ in samples]
    if not sum(counts):
        return tiles, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0,), np.float32)
    # all tiles' boxes at once (one scale and one offset op instead of 4 of each): per-box rows of the
    # tile's (sx, sy, sx, sy, x1, y1, x1, y1), float32 as the per-tile version computed it
    per_box = np.repeat(np.asarray(affine, np.float32), counts, axis=0)
    boxes = np.concatenate([b for (_, b, _), c in zip(samples, counts) if c]).astype(np.float32, copy=False)
    boxes = boxes * per_box[:, :4] + per_box[:, 4:]
    labels = np.concatenate([lab for (_, _, lab), c in zip(samples, counts) if c])
    ref = box_areas(boxes)
    clip_boxes(boxes, 2 * out_h, 2 * out_w)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return tiles, boxes[keep], labels[keep], ref[keep]


def _visible(tile: np.ndarray, x1: int, y1: int, height: int, width: int) -> tuple[np.ndarray, int, int]:
    """The part of a tile placed at (x1, y1) that lies on a (height, width) canvas, as a view, and its
    top-left corner on the canvas."""
    h, w = tile.shape[:2]
    cx1, cy1 = max(x1, 0), max(y1, 0)
    cx2, cy2 = min(x1 + w, width), min(y1 + h, height)
    return tile[cy1 - y1 : max(cy2, cy1) - y1, cx1 - x1 : max(cx2, cx1) - x1], cx1, cy1


def mosaic_affine(
    samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    rng: np.random.Generator,
    cfg: AugmentConfig,
    flip: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mosaic followed by a random affine, rendered without the mosaic canvas.

    Mosaic: 4 images tiled around a random centre on a (2H, 2W) canvas filled with 114; each image is first
    resized to fit (H, W) keeping its ratio; image 0 goes top-left of the centre, 1 top-right, 2 bottom-left,
    3 bottom-right, each cut at the canvas border; the centre is drawn from U(0.5, 1.5) x (W, H). Affine:
    a random rotation/scale/shear/translation (:func:`affine_matrix`) about the canvas centre into
    ``cfg.img_size``, border 114; boxes follow, are clipped and filtered. Here each tile is warped once,
    straight into the output, by the composition (affine o placement on the canvas).

    Why: the canvas costs a 4.9 MB fill plus 4 tile copies at 640, and warping it reads a 4x larger source
    than needed; one warp per tile over only the area it covers is ~2x cheaper in total. The pixels equal the
    two-step result (draw the canvas, warp it; the reference in the tests) except along the seams between
    tiles (a line about one output pixel wide where bilinear interpolation would have mixed two tiles; here it
    mixes with the 114 pad). Tiles may have 3 or 4 channels (all the same); the output has as many.

    ``flip``: also mirror the result left-right (the pipeline's horizontal flip, see
    :func:`_flip_matrix`), folded into the same warps instead of a separate pass over the image. It draws
    nothing from ``rng``. Boxes equal ``horizontal_flip`` of the unflipped boxes (to float rounding);
    pixels equal up to OpenCV's 1/32-pixel quantisation of the sampling positions: a level or two, and
    ~0.01% of the pixels, on a tile's edge, fall on its other side (tested).
    """
    out_h, out_w = cfg.img_size
    tiles, boxes, labels, ref = _mosaic_layout(samples, rng, (out_h, out_w))
    # the canvas is (2H, 2W): the affine rotates about its centre (W, H)
    m, s = affine_matrix(rng, (out_w, out_h), (out_h, out_w), cfg.degrees, cfg.translate, cfg.mosaic_scale, cfg.shear)
    m_img = _flip_matrix(out_w) @ np.vstack([m, (0.0, 0.0, 1.0)]) if flip else m
    out = np.full((out_h, out_w, tiles[0][0].shape[2]), PAD_VALUE, dtype=np.uint8)
    for tile, x1, y1 in tiles:
        part, cx1, cy1 = _visible(tile, x1, y1, 2 * out_h, 2 * out_w)
        mk = m_img.copy()
        mk[:, 2] += m_img[:, :2] @ np.array([cx1, cy1], np.float64)  # part px -> canvas px -> output px
        warp_into(out, part, mk)
    # boxes through the unflipped m, then mirrored: clipping to the image commutes with the mirror
    boxes, labels = _affine_boxes(boxes, labels, ref, m, s, (out_h, out_w), cfg)
    if flip:
        boxes = _flip_boxes(boxes, out_w)
    return out, boxes, labels


def _flip_matrix(width: int) -> np.ndarray:
    """(2, 3) affine of a left-right mirror of a ``width``-pixel image *in pixel-index coordinates*, the
    convention of cv2.warpAffine and cv2.flip: column c -> width - 1 - c. (Boxes live in continuous
    coordinates, where the same mirror is x -> width - x: see :func:`_flip_boxes`.)"""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def _flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """(N, 4) xyxy boxes mirrored left-right in a ``width``-pixel image (as :func:`horizontal_flip`)."""
    if not len(boxes):
        return boxes
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


# ================================================================================================= mixup


def mixup(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    other: tuple[np.ndarray, np.ndarray, np.ndarray],
    rng: np.random.Generator,
    cfg: AugmentConfig,
    flip_output: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLOX-style MixUp: blend ``image`` 50/50 with another image that is letterboxed to the input size,
    rescaled by U(*mixup_scale), flipped with p=0.5 and randomly cropped back to the input size.

    Implemented as YOLOX does it (cv2.resize of the other image, flip, crop), but without building the
    padded frame: only the part of the resized image inside the crop window is copied (flipped when needed)
    into a 114-filled layer. An affine warp of just the visible part would sample the same points, yet
    cv2.resize (separable) is 1.2-2x cheaper per pixel than warpAffine, even when a jitter of 1.5 makes it
    compute 2.25x more pixels than are visible.

    Args:
        image: (H, W, 3) uint8, already at the input size. boxes/labels: its targets.
        other: (image, boxes, labels) of the second sample at its original size.
        flip_output: ``image`` and ``boxes`` are already mirrored left-right (the pipeline's horizontal
            flip, folded into :func:`mosaic_affine`): mirror the other image's layer and boxes too (in the
            same copy). The result is exactly the mirror of the unflipped MixUp. Draws nothing from ``rng``.

    Returns:
        (blended image (H, W, 3) uint8, concatenated boxes, labels).
    """
    out_h, out_w = image.shape[:2]
    o_img, o_boxes, o_labels = other
    jit = _uniform(rng, *cfg.mixup_scale)
    flip = bool(rng.random() < 0.5)
    h0, w0 = o_img.shape[:2]
    t = min(out_h / h0, out_w / w0) * jit  # letterbox ratio, then the jitter
    rh, rw = (h0, w0) if t == 1.0 else (max(1, int(round(h0 * t))), max(1, int(round(w0 * t))))
    # the letterboxed+jittered frame is (int(H*jit), int(W*jit)), padded to at least (H, W)
    frame_h, frame_w = int(out_h * jit), int(out_w * jit)
    pad_h, pad_w = max(frame_h, out_h), max(frame_w, out_w)
    y_off = int(rng.integers(0, pad_h - out_h)) if pad_h > out_h else 0
    x_off = int(rng.integers(0, pad_w - out_w)) if pad_w > out_w else 0
    img_x = frame_w - rw if flip else 0  # flipping the frame moves the image to its right edge
    sx, sy = rw / w0, rh / h0
    layer = np.full((out_h, out_w, o_img.shape[2]), PAD_VALUE, dtype=np.uint8)
    # the resized image spans frame columns [img_x, img_x + rw) and rows [0, rh); the layer is the frame's
    # window [x_off, x_off + W) x [y_off, y_off + H): copy their intersection (frame columns fx1..fx2)
    fx1, fx2 = max(img_x, x_off), min(img_x + rw, x_off + out_w)
    fy1, fy2 = max(0, y_off), min(rh, y_off + out_h)
    if fx2 > fx1 and fy2 > fy1:
        resized = o_img if (rh, rw) == (h0, w0) else cv2.resize(o_img, (rw, rh), interpolation=cv2.INTER_LINEAR)
        # frame column X shows resized column X - img_x, or img_x + rw - 1 - X when flipped
        sc1, sc2 = (img_x + rw - fx2, img_x + rw - fx1) if flip else (fx1 - img_x, fx2 - img_x)
        lx1, lx2 = fx1 - x_off, fx2 - x_off  # layer columns, mirrored once more by the output flip
        if flip_output:
            lx1, lx2 = out_w - lx2, out_w - lx1
        src, dst = resized[fy1:fy2, sc1:sc2], layer[fy1 - y_off : fy2 - y_off, lx1:lx2]
        if flip != flip_output:
            cv2.flip(src, 1, dst=dst)  # OpenCV writes into the strided view (tested)
        else:
            dst[...] = src
    if layer.shape[2] != image.shape[2]:
        layer = cv2.cvtColor(layer, cv2.COLOR_RGB2RGBA if image.shape[2] == 4 else cv2.COLOR_RGBA2RGB)
    # blend into our own temporary (never into the caller's ``image``): one allocation less
    blended = cv2.addWeighted(image, 0.5, layer, 0.5, 0.0, dst=layer)
    if len(o_boxes):
        b = o_boxes * np.array([sx, sy, sx, sy], np.float32)
        if flip:
            b = np.stack([img_x + rw - b[:, 2], b[:, 1], img_x + rw - b[:, 0], b[:, 3]], axis=1)
        b = b - np.array([x_off, y_off, x_off, y_off], np.float32)
        if flip_output:  # before clipping, which commutes with the mirror
            b = _flip_boxes(b, out_w)
        ref = box_areas(b)
        clip_boxes(b, out_h, out_w)
        keep = box_candidates(b, ref, cfg.min_box_size, cfg.min_area_ratio, cfg.max_aspect_ratio)
        boxes = np.concatenate([boxes, b[keep].astype(np.float32)])
        labels = np.concatenate([labels, o_labels[keep]])
    return blended, boxes, labels


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
    partners: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full training transform of one sample.

    strong (mosaic on): Mosaic (p=mosaic_prob) -> RandomAffine -> MixUp (p=mixup_prob); otherwise (and in
    the final no-aug epochs) a letterbox. Then HSV (p=hsv_prob) and horizontal flip (p=flip_prob); on the
    mosaic path the flip is folded into the mosaic/MixUp warps (the same result: it commutes with the
    per-pixel blend and HSV).

    Args:
        index: the sample; mosaic partners are drawn uniformly from ``partners`` (default
            ``range(num_samples)``).
        load: index -> (image (h, w, 3) uint8, boxes (N, 4) xyxy px, labels (N,)); must not modify shared
            arrays in place (this function never writes into what ``load`` returns). The image may also be
            (h, w, 4) (RGB + an ignored 4th channel): OpenCV's warpAffine is ~2.4x faster on 4-channel
            than on 3-channel uint8 images, so :class:`~cspdet.data.TrainDataset` keeps its fitted images
            that way; the output is always RGB.
        pick_mixup: draws the MixUp partner index (default: uniform).

    Returns:
        (image (H, W, 3) uint8 with (H, W) = cfg.img_size, boxes (N, 4) float32 xyxy px, labels (N,) int64),
        at most ``cfg.max_labels`` boxes.
    """
    out_h, out_w = cfg.img_size
    # The horizontal flip is decided first (it is independent of every other draw, so its place in the
    # random stream changes no statistics): the mosaic path then folds it into its warps, which saves a
    # full pass over the output image (cv2.flip) on half of the samples. Flipping commutes with the
    # per-pixel steps in between (MixUp's blend, HSV), so the result is the same augmentation.
    flip = cfg.flip_prob > 0 and rng.random() < cfg.flip_prob
    if strong and cfg.mosaic_prob > 0 and rng.random() < cfg.mosaic_prob:
        if partners is None:
            idx = [index, *(int(i) for i in rng.integers(0, num_samples, 3))]
        else:
            idx = [index, *(int(partners[k]) for k in rng.integers(0, len(partners), 3))]
        image, boxes, labels = mosaic_affine([load(i) for i in idx], rng, cfg, flip=flip)
        if cfg.mixup_prob > 0 and rng.random() < cfg.mixup_prob:
            j = pick_mixup(rng) if pick_mixup is not None else int(rng.integers(0, num_samples))
            image, boxes, labels = mixup(image, boxes, labels, load(j), rng, cfg, flip_output=flip)
        flip = False  # done
    else:
        src, boxes, labels = load(index)
        image, r = Letterbox((out_h, out_w)).apply(src)
        if image is src:
            image = image.copy()  # never hand out (and later modify) a cached array
        boxes = boxes * np.float32(r)
        if len(boxes):
            keep = box_candidates(boxes, box_areas(boxes), cfg.min_box_size, 0.0, cfg.max_aspect_ratio)
            boxes, labels = boxes[keep], labels[keep]
    if cfg.hsv_prob > 0 and rng.random() < cfg.hsv_prob:
        image = hsv_jitter(image, rng, cfg.hsv_gains)  # 3 channels out, also from 4
    if image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    if flip:  # the letterbox path (the mosaic path has flipped already)
        image, boxes = horizontal_flip(image, boxes)
    if len(boxes) > cfg.max_labels:
        boxes, labels = boxes[: cfg.max_labels], labels[: cfg.max_labels]
    return image, boxes.astype(np.float32, copy=False), labels.astype(np.int64, copy=False)
