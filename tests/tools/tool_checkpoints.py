"""``make_checkpoint``: a tiny real cspdet detector saved as a checkpoint, for the CLI tests. A module of its own
name (every test directory has a ``conftest`` module, so ``from conftest import`` would find whichever was
imported first); tests/tools/conftest.py re-exports it."""

from __future__ import annotations

from pathlib import Path

import torch

from cspdet.config import Config, ModelConfig, config_to_dict
from cspdet.runtime.checkpoint import new_checkpoint, save_checkpoint


def make_checkpoint(path: Path, num_classes: int, class_names: list[str], category_ids: list[int],
                    img_size: int = 128, dataset: str | None = None, version: int = 2) -> Path:
    """A tiny real cspdet detector (random weights; head prior 0.5 so it returns boxes) saved as a checkpoint
    of format ``version`` (1 = the layout cspdet 0.1 wrote: class names at the top, the model in the config);
    ``dataset`` is recorded as a training run records it (``meta.dataset`` and the run config)."""
    from cspdet.models import DetectorMeta, create_detector

    cfg = Config(model=ModelConfig(name="cspdarknet_nano", num_classes=num_classes, width=0.125))
    cfg.eval.img_size = [img_size, img_size]
    cfg.data.workers = 0
    if dataset:
        cfg.data.dataset = dataset
    torch.manual_seed(0)
    model = create_detector("cspdarknet_nano", num_classes=num_classes, width=0.125, prior_prob=0.5)
    if version == 1:
        ckpt = {"format": "cspdet", "kind": "detector", "version": 1, "config": config_to_dict(cfg),
                "class_names": class_names, "category_ids": category_ids, "model": model.state_dict()}
    else:
        meta = DetectorMeta(class_names, category_ids, img_size=(img_size, img_size), dataset=dataset)
        ckpt = new_checkpoint("detector", model.spec.to_dict(), meta.to_dict(), model.state_dict(),
                              config=config_to_dict(cfg))
    save_checkpoint(ckpt, path)
    return path
