"""Fixtures for the evaluator / predictor tests: a tiny real detector, its checkpoint, a coco128 subset."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cspdet.config import Config, ModelConfig, config_to_dict
from cspdet.runtime.checkpoint import new_checkpoint, save_checkpoint

SHAPES = ["circle", "square", "triangle"]


def tiny_config(num_classes: int = 3, img_size: int = 128) -> Config:
    cfg = Config(model=ModelConfig(name="cspdarknet_nano", num_classes=num_classes, width=0.125))
    cfg.eval.img_size = [img_size, img_size]
    cfg.data.workers = 0
    return cfg


def tiny_detector(cfg: Config, seed: int = 0):
    """A real cspdet detector, randomly initialised, ~0.2 M parameters. A prior of 0.5 (instead of 0.01)
    makes the untrained head score ~0.25, so it returns plenty of boxes to map, draw and score."""
    from cspdet.models import create_detector

    torch.manual_seed(seed)
    return create_detector(cfg.model.name, num_classes=cfg.model.num_classes, width=cfg.model.width,
                           prior_prob=0.5).eval()


def write_checkpoint(path: Path, cfg: Config, class_names: list[str], category_ids: list[int], seed: int = 0,
                     version: int = 2) -> Path:
    """A checkpoint of ``tiny_detector(cfg, seed)``; ``version=1`` writes the layout cspdet 0.1 wrote (class names
    at the top level, the model described only by the stored config)."""
    from cspdet.models import DetectorMeta

    model = tiny_detector(cfg, seed)
    if version == 1:
        ckpt = {"format": "cspdet", "kind": "detector", "version": 1, "config": config_to_dict(cfg),
                "class_names": class_names, "category_ids": category_ids, "model": model.state_dict()}
    else:
        meta = DetectorMeta(class_names, category_ids, img_size=tuple(cfg.eval.img_size))
        ckpt = new_checkpoint("detector", model.spec.to_dict(), meta.to_dict(), model.state_dict(),
                              config=config_to_dict(cfg))
    save_checkpoint(ckpt, path)
    return path


@pytest.fixture(scope="session")
def tiny():
    """The helpers above, for tests: ``tiny.config()``, ``tiny.detector(cfg)``, ``tiny.write_checkpoint(...)``."""
    return SimpleNamespace(config=tiny_config, detector=tiny_detector, write_checkpoint=write_checkpoint,
                           names=SHAPES)


@pytest.fixture(scope="session")
def shapes_checkpoint(tmp_path_factory) -> Path:
    """3-class tiny detector checkpoint (eval size 128)."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", tiny_config(), SHAPES, [1, 2, 3])


@pytest.fixture(scope="session")
def coco128_subset(coco128_val_subset) -> Path:
    """Dataset descriptor of the first 12 coco128 val images (real photos, 80 COCO categories)."""
    return coco128_val_subset(12)
