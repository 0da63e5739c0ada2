"""Draw boxes with class names and tile images into a grid (``tools/show_dataset.py``)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

__all__ = ["class_color", "draw_boxes", "make_grid"]


def class_color(label: int) -> tuple[int, int, int]:
    """A stable, well-separated RGB colour per class index (golden-ratio hue steps)."""
    hue = int((label * 0.61803398875 % 1.0) * 180)
    hsv = np.array([[[hue, 220, 235]]], np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw_boxes(
    image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, names: Sequence[str], thickness: int = 2
) -> np.ndarray:
    """Copy of ``image`` ((H, W, 3) uint8 RGB) with (N, 4) xyxy ``boxes`` and their class names drawn."""
    out = np.ascontiguousarray(image).copy()
    for (x1, y1, x2, y2), label in zip(np.asarray(boxes).tolist(), np.asarray(labels).tolist()):
        label = int(label)
        color = class_color(label)
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(out, p1, p2, color, thickness, cv2.LINE_AA)
        text = names[label] if 0 <= label < len(names) else str(label)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        ty = p1[1] - 3 if p1[1] - th - 4 >= 0 else p1[1] + th + 3
        cv2.rectangle(out, (p1[0], ty - th - 2), (p1[0] + tw + 2, ty + base - 1), color, -1)
        cv2.putText(out, text, (p1[0] + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return out


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
