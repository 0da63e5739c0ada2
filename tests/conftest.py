"""Shared fixtures. The real COCO-format sample lives beside the checkout in ../shared/data/coco128."""

from __future__ import annotations

import os
from pathlib import Path

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
