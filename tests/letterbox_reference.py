"""The letterbox function cspdet had before :class:`cspdet.data.Letterbox` replaced it, verbatim: the reference
that the tests of every letterbox path compare against (bit-exact)."""

from __future__ import annotations

import cv2
import numpy as np


def old_letterbox(image: np.ndarray, size, pad_value: int = 114) -> tuple[np.ndarray, float]:
    """(h, w, C) uint8 -> ((H, W, C) uint8 resized keeping the ratio and padded bottom/right, ratio r)."""
    out_h, out_w = int(size[0]), int(size[1])
    h, w = image.shape[:2]
    r = min(out_h / h, out_w / w)
    new_w, new_h = min(out_w, int(round(w * r))), min(out_h, int(round(h * r)))
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if (new_h, new_w) == (out_h, out_w):
        return np.ascontiguousarray(image), r
    out = np.full((out_h, out_w, image.shape[2]), pad_value, dtype=np.uint8)
    out[:new_h, :new_w] = image
    return out, r
