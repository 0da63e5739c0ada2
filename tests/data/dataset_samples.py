"""The crafted three-image dataset of tests/data (its classes, ids, objects and how its images are drawn) and
``load_tool``: imported by tests/data/conftest.py and by the tests themselves, under a name of its own (every test
directory has a ``conftest`` module, so ``from conftest import`` would find whichever was imported first)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]

# (label, x1, y1, x2, y2) objects drawn as solid colour blocks, one colour per class, so tests can check
# which pixels belong to which box.
CLASS_COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
NAMES = ["red", "green", "blue"]
CAT_IDS = [3, 7, 11]  # deliberately non-contiguous COCO category ids


def draw_image(path: Path, h: int, w: int, objects: list[tuple[int, float, float, float, float]]) -> None:
    """A grey (H, W) image with each object as a solid rectangle of its class colour (written RGB->BGR)."""
    img = np.full((h, w, 3), 40, np.uint8)
    for label, x1, y1, x2, y2 in objects:
        img[int(y1) : int(y2), int(x1) : int(x2)] = CLASS_COLORS[label]
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


# three images: two with objects, one background
OBJECTS = {
    1: (64, 96, [(0, 10, 8, 40, 30), (2, 50, 30, 90, 60)]),
    2: (80, 64, [(1, 4, 4, 30, 70)]),
    3: (48, 48, []),
}


def load_tool(name: str):
    """Import tools/<name>.py as a module (tools/ is not a package)."""
    tools = str(REPO / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
