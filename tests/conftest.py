"""Shared fixtures. The real COCO-format sample lives beside the checkout in ../shared/data/coco128."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
COCO128 = Path(os.environ.get("CSPDET_COCO128", REPO_ROOT.parent / "shared" / "data" / "coco128"))

# Two cores are shared by the test process and data workers: one intra-op thread keeps tests predictable.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def coco128_root() -> Path:
    """Root of the real coco128 sample; skips the test when ../shared/data/coco128 is absent."""
    if not (COCO128 / "annotations" / "instances_val.json").is_file():
        pytest.skip(f"real COCO sample not found at {COCO128} (set CSPDET_COCO128 or provide ../shared)")
    return COCO128


@pytest.fixture(scope="session")
def coco128_val_subset(coco128_root, tmp_path_factory) -> Callable[[int], Path]:
    """``coco128_val_subset(n)`` -> dataset descriptor YAML of the first ``n`` coco128 val images (real photos,
    80 COCO categories); its ground truth is ``val.json`` beside the descriptor."""

    def make(n: int) -> Path:
        data = json.loads((coco128_root / "annotations" / "instances_val.json").read_text())
        keep = {im["id"] for im in data["images"][:n]}
        data["images"] = [im for im in data["images"] if im["id"] in keep]
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        root = tmp_path_factory.mktemp(f"coco128_val_{n}")
        (root / "val.json").write_text(json.dumps(data))
        desc = root / "subset.yaml"
        desc.write_text(f"format: coco\npath: {root}\nval:\n  images: {coco128_root / 'images' / 'val'}\n"
                        f"  annotations: {root / 'val.json'}\n")
        return desc

    return make
