"""Every picture cspdet draws: one class palette, one box drawer, and an image grid.

:func:`draw_boxes` draws the detections of ``Results.plot`` (``cspdet predict``), the samples of
``tools/show_dataset.py`` / ``cspdet check --show`` and the trainer's TensorBoard images, so a class has the same
colour everywhere. numpy + OpenCV only at import (no torch), so the data package can use it too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

__all__ = ["class_color", "draw_boxes", "make_grid", "write_grid"]


def class_color(label: int) -> tuple[int, int, int]:
    """A fixed, distinct-ish RGB colour per class index (golden-ratio hue steps)."""
    hue = int((label * 0.618033988749895 % 1.0) * 180)
    hsv = np.uint8([[[hue, 200, 230]]])
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    scores: np.ndarray | None = None,
    line_width: int | None = None,
) -> np.ndarray:
    """A copy of ``image`` with boxes and their class names (and scores) drawn in :func:`class_color`.

    Args:
        image: (H, W, 3) uint8 RGB; not modified.
        boxes: (N, 4) xyxy px.
        labels: (N,) class indices into ``names`` (an index outside it is written as the number).
        names: class names.
        scores: (N,) shown after the name with 2 decimals; None: names only.
        line_width: box line width in px (default: scales with the image size).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    canvas = np.ascontiguousarray(image).copy()
    h, w = canvas.shape[:2]
    lw = line_width or max(1, round((h + w) / 2 * 0.003))
    font_scale = max(0.35, lw / 3)
    thickness = max(1, lw - 1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    for i, (box, label) in enumerate(zip(boxes, labels.tolist())):
        label = int(label)
        colour = class_color(label)
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, lw, cv2.LINE_AA)
        text = str(names[label]) if 0 <= label < len(names) else str(label)
        if scores is not None:
            text += f" {float(scores[i]):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        # label above the box when it fits, else inside its top edge; shifted left so that a box at the
        # right border keeps its whole label inside the image
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
        left = max(0, min(x1, w - tw - 2))
        cv2.rectangle(canvas, (left, top), (left + tw + 2, top + th + base + 2), colour, -1)
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        cv2.putText(canvas, text, (left + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink, thickness,
                    cv2.LINE_AA)
    return canvas


def make_grid(images: Sequence[np.ndarray], cols: int = 4, cell: int = 320, pad: int = 4) -> np.ndarray:
    """Tile (H, W, 3) uint8 images into one (rows * cell, cols * cell, 3) image, each fitted into a cell."""
    cols = max(1, min(cols, len(images)))
    rows = (len(images) + cols - 1) // cols
    grid = np.full((rows * cell + (rows + 1) * pad, cols * cell + (cols + 1) * pad, 3), 255, np.uint8)
    for k, img in enumerate(images):
        h, w = img.shape[:2]
        r = cell / max(h, w)
        small = cv2.resize(img, (max(1, int(w * r)), max(1, int(h * r))), interpolation=cv2.INTER_AREA)
        y = pad + (k // cols) * (cell + pad)
        x = pad + (k % cols) * (cell + pad)
        grid[y : y + small.shape[0], x : x + small.shape[1]] = small
    return grid


def write_grid(
    descriptor: Any, split: str, out: str | os.PathLike, augment: bool = False, num: int = 16, img_size: int = 640,
    seed: int = 0, cols: int = 4, no_mosaic: bool = False,
) -> Path:  # fmt: skip
    """Render ``num`` samples of ``split`` of a dataset, boxes and class names drawn, into one grid image.

    Args:
        descriptor: dataset descriptor (path or dict, as :func:`cspdet.data.build_dataset` takes).
        out: the image file to write (any format OpenCV writes, by its suffix).
        augment: show the training pipeline's output (mosaic, affine, mixup, HSV, flip) instead of the images
            as stored (letterboxed to ``img_size``); ``no_mosaic``: the final no-mosaic epochs' pipeline.

    Returns:
        the written path.

    Raises:
        DatasetError: the dataset cannot be read; OutputError: ``out`` cannot be written.
    """
    from ..fileio import atomic_write
    from . import AugmentConfig, TrainDataset, ValDataset, build_dataset

    ds = build_dataset(descriptor, split)
    if augment:
        view = TrainDataset(ds, AugmentConfig(img_size=(img_size, img_size)), seed=seed)
        if no_mosaic:
            view.close_mosaic()
    else:
        view = ValDataset(ds, img_size)
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(ds))[:num] if augment else np.arange(min(num, len(ds)))
    tiles = []
    for i in picks.tolist():
        item = view[i]
        tile = draw_boxes(item.image, item.targets.boxes, item.targets.labels, ds.class_names)
        cv2.putText(tile, f"id {item.image_id}", (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
        tiles.append(tile)
    grid = make_grid(tiles, cols=cols, cell=min(img_size, 480))
    path = Path(out)
    ok, encoded = cv2.imencode(path.suffix or ".jpg", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot write images with suffix {path.suffix!r}")
    return atomic_write(path, encoded.tobytes())
