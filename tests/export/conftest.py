"""Fixtures for the export tests: real letterboxed coco128 images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from export_helpers import HW, HW2, letterboxed  # tests/export_helpers.py

pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install 'cspdet[export]')")


@pytest.fixture(scope="session")
def real_images(coco128_root) -> list[np.ndarray]:
    """Three real coco128 val photos, (h, w, 3) uint8 RGB, centre-cropped to the 3:4 aspect of the export size so
    the letterbox adds no padding: a padded band gives many points the exact same score (identical inputs), and
    the order of exact ties is arbitrary in every runtime."""
    from cspdet.data.image_io import read_image

    data = json.loads((coco128_root / "annotations" / "instances_val.json").read_text())
    out = []
    for im in data["images"][:3]:
        img = read_image(coco128_root / "images" / "val" / im["file_name"])
        h, w = img.shape[:2]
        ch, cw = min(h, w * 3 // 4), min(w, h * 4 // 3)
        y, x = (h - ch) // 2, (w - cw) // 2
        out.append(np.ascontiguousarray(img[y:y + ch, x:x + cw]))
    return out


@pytest.fixture(scope="session")
def real_batch(real_images) -> torch.Tensor:
    """The real photos letterboxed to :data:`HW`, (3, 3, 96, 128)."""
    return letterboxed(real_images, HW)


@pytest.fixture(scope="session")
def real_batch2(real_images) -> torch.Tensor:
    """Two of them letterboxed to :data:`HW2`, (2, 3, 64, 64)."""
    return letterboxed(real_images[:2], HW2)
