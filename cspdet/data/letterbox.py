"""The letterbox: fit an image into the network input keeping its aspect ratio, and map boxes back.

One value, :class:`Letterbox`, is used wherever cspdet letterboxes: the validation dataset, the no-mosaic
training path, the predictor, the trainer's logged images, and (through :meth:`Letterbox.invert`) the
evaluator's and the predictor's mapping of predicted boxes back to the original image::

    lb = Letterbox((640, 640))
    padded, r = lb.apply(image)                                # (640, 640, 3) uint8, ratio r
    boxes = Letterbox.invert(pred_boxes, r, image.shape[:2])   # (N, 4) xyxy original px, clipped

The image is resized by r = min(H / h, W / w) (bilinear) and placed at the top-left corner; the rest is
padded with ``pad_value``. Because nothing is shifted, input px = original px * r, so the inverse is a
division by r.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, TypeVar, Union

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["PAD_VALUE", "Letterbox"]

PAD_VALUE = 114  # YOLOX/Ultralytics grey for padding and affine borders

BoxesT = TypeVar("BoxesT", bound=Union[np.ndarray, "torch.Tensor"])


@dataclass(frozen=True)
class Letterbox:
    """Keep-ratio resize to ``size`` with bottom/right padding.

    Attributes:
        size: (H, W) output size in px (an int means a square).
        pad_value: grey level of the padding.
    """

    size: tuple[int, int]
    pad_value: int = PAD_VALUE

    def __post_init__(self) -> None:
        size = self.size
        hw = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if len(hw) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in hw):
            raise ValueError(f"letterbox size must be a positive int or (height, width), got {size!r}")
        object.__setattr__(self, "size", (int(hw[0]), int(hw[1])))  # frozen: normalise once, here

    def resize(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The keep-ratio resize of :meth:`apply` without the padding.

        Args:
            image: (h, w, C) uint8.

        Returns:
            (image (h', w', C) with h' <= H, w' <= W, ratio r = min(H / h, W / w)); the input itself when r
            leaves its size unchanged.
        """
        out_h, out_w = self.size
        h, w = image.shape[:2]
        r = min(out_h / h, out_w / w)
        # min(): round() may overshoot the side that r was not taken from by one px
        new_w, new_h = min(out_w, int(round(w * r))), min(out_h, int(round(h * r)))
        if (new_w, new_h) != (w, h):
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        return image, r

    def apply(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """Letterbox one image.

        Args:
            image: (h, w, C) uint8 (C = 3, or 4 for the training path's RGB + spare channel).

        Returns:
            (image (H, W, C) uint8, ratio r = min(H / h, W / w)). The input itself (made contiguous) is
            returned when it already has the output size.
        """
        out_h, out_w = self.size
        image, r = self.resize(image)
        new_h, new_w = image.shape[:2]
        if (new_h, new_w) == (out_h, out_w):
            return np.ascontiguousarray(image), r
        out = np.full((out_h, out_w, image.shape[2]), self.pad_value, dtype=np.uint8)
        out[:new_h, :new_w] = image
        return out, r

    @staticmethod
    def invert(boxes: BoxesT, ratio: float, orig_size: Sequence[int] | None) -> BoxesT:
        """Boxes in letterboxed input px -> boxes in original image px.

        Args:
            boxes: (N, 4) xyxy in input px, a numpy array or a torch tensor; not modified.
            ratio: the ``r`` that :meth:`apply` returned for the image.
            orig_size: (h, w) of the original image; x is clipped to [0, w] and y to [0, h]. None: no clipping.

        Returns:
            (N, 4) xyxy in original px, the same kind of array as ``boxes``. The division happens in the
            dtype of ``boxes`` (float32 stays float32), so callers choose the precision by what they pass.
        """
        out = boxes / float(ratio)  # a new array: clipped in place below
        if orig_size is None:
            return out
        h, w = orig_size[0], orig_size[1]
        # x and y columns separately with scalar bounds: numpy's clip keeps -0.0 with scalar bounds but not
        # with per-column array bounds, and -0.0 would show in a results json
        if isinstance(out, np.ndarray):
            np.clip(out[..., 0::2], 0, w, out=out[..., 0::2])
            np.clip(out[..., 1::2], 0, h, out=out[..., 1::2])
        else:
            out[..., 0::2].clamp_(0, w)
            out[..., 1::2].clamp_(0, h)
        return out
