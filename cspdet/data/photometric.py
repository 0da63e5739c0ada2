"""Photometric augmentation: HSV shifts through per-plane lookup tables (bit-exact with albumentations'
HueSaturationValue, about twice as fast).

Images are (H, W, 3) uint8 RGB."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import stringzilla as sz

__all__ = ["shift_hsv", "hsv_jitter"]

# ========================================================================================== photometric


def _lut_inplace(plane: np.ndarray, table: np.ndarray) -> None:
    """plane[...] = table[plane] for a contiguous uint8 plane and a (256,) uint8 table.

    StringZilla's SIMD byte translation: ~12x faster than cv2.LUT on a 640x640 plane (0.008 vs 0.1 ms), so
    :func:`shift_hsv` of all three channels at 640 takes 1.2 instead of 1.5 ms, a training sample ~4% less.
    """
    sz.translate(memoryview(plane.reshape(-1)), memoryview(table), inplace=True)


def shift_hsv(image: np.ndarray, hue_shift: int, sat_shift: int, val_shift: int) -> np.ndarray:
    """Shift hue (mod 180), saturation and value (both clipped to 0..255; grey pixels, S = 0, stay grey) of
    an RGB uint8 image. Returns a new array.

    Bit-exact with albumentations' ``HueSaturationValue.apply`` (tested), about 2x faster: every
    channel's change is a function of its own value, so each is one 256-entry table applied to its plane
    (split into preallocated planes, SIMD table lookup, merge), with no float conversions.
    """
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    planes = [np.empty(image.shape[:2], np.uint8) for _ in range(3)]
    cv2.split(hsv, mv=planes)
    ramp = np.arange(256, dtype=np.int16)
    if hue_shift:
        _lut_inplace(planes[0], np.mod(ramp + hue_shift, 180).astype(np.uint8))
    if sat_shift:
        table = np.clip(ramp + sat_shift, 0, 255).astype(np.uint8)
        table[0] = 0  # grey stays grey
        _lut_inplace(planes[1], table)
    if val_shift:
        _lut_inplace(planes[2], np.clip(ramp + val_shift, 0, 255).astype(np.uint8))
    cv2.merge(planes, dst=hsv)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=hsv)


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, gains: Sequence[float] = (5, 30, 30)) -> np.ndarray:
    """YOLOX HSV augmentation: each of hue/sat/value is shifted with p=0.5 by U(-gain, gain).

    The shifts are drawn from ``rng`` (reproducible) and applied by :func:`shift_hsv` (the same pixels as
    albumentations' HueSaturationValue). Returns a new array (or ``image`` itself when no channel is
    shifted).
    """
    shifts = rng.uniform(-1.0, 1.0, 3) * np.asarray(gains, np.float64) * rng.integers(0, 2, 3)
    h, s, v = (int(round(x)) for x in shifts)
    if h == 0 and s == 0 and v == 0:
        return image
    return shift_hsv(image, h, s, v)
