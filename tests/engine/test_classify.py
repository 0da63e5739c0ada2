"""Backbone classification pretraining: learning, outputs, exact resume, and a detector initialised from it."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from cspdet.config import ConfigError, PretrainConfig, config_from_dict
from cspdet.data.imagefolder import ImageFolderDataset, ImageFolderError, build_classification_loader
from cspdet.engine.build import build_detector, init_weights
from cspdet.runtime.checkpoint import CheckpointError, load_checkpoint
from cspdet.models import BackboneSpec, CSPNet
from cspdet.engine.classify import ClassifierTrainer, build_classifier, evaluate_classifier

# Four stride-2 stages after a stride-2 stem: strides 4/8/16/32, so the same backbone serves a detector.
STAGES = [[1, 8, "darknet", True], [1, 16, "darknet", True], [1, 16, "resnet", True], [1, 32, "darknet", True]]
COLOURS = {"blue": (40, 60, 200), "green": (40, 190, 60), "red": (210, 40, 40)}


def make_imagefolder(root: Path, per_class: tuple[int, int] = (8, 4), size: int = 40) -> Path:
    """Noisy images whose dominant colour is the class, in ImageFolder layout."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = int(rng.integers(size, size + 16)), int(rng.integers(size, size + 16))
                img = np.clip(rng.normal(colour, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return root


def pretrain_raw(data: Path, out: Path, **over) -> dict:
    return {"pretrain": {"model": "custom", "stem_channels": 8, "stage_defs": STAGES, "data": str(data),
                         "img_size": 32, "epochs": 2, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0.5,
                         "weight_decay": 1e-4, "label_smoothing": 0.1, "ema": True, "ema_decay": 0.9,
                         "workers": 0, "device": "cpu", "output_dir": str(out), **over}}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("imagefolder"))


def test_imagefolder_dataset_and_errors(folder, tmp_path):
    ds = ImageFolderDataset(folder / "train", img_size=32, train=True, seed=3)
    assert ds.class_names == ["blue", "green", "red"] and len(ds) == 24
    img, label = ds[0]
    assert img.shape == (3, 32, 32) and img.dtype == torch.uint8 and label == 0
    ds.set_epoch(1)
    again = ds[0][0]
    ds.set_epoch(0)
    assert torch.equal(ds[0][0], img) and not torch.equal(again, img)  # a function of (seed, epoch, index)
    val = ImageFolderDataset(folder / "val", img_size=32, train=False, class_names=ds.class_names)
    assert val[0][0].shape == (3, 32, 32)
    loader = build_classification_loader(ds, batch_size=8, train=True, seed=0)
    images, labels = next(iter(loader))
    assert images.shape == (8, 3, 32, 32) and labels.dtype == torch.int64
    with pytest.raises(ImageFolderError, match="not found"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "other" / "cat").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "other" / "cat" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageFolderError, match="classes differ"):
        ImageFolderDataset(tmp_path / "other", class_names=ds.class_names)


def test_build_classifier_names():
    cfg = PretrainConfig(model="custom", stem_channels=8, stage_defs=STAGES)
    model = build_classifier(cfg, 3)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    small = build_classifier(PretrainConfig(model="cspdarknet_nano", width=0.125), 5)
    assert small(torch.zeros(1, 3, 64, 64)).shape == (1, 5)
    with pytest.raises(ConfigError, match="unknown model 'resnet18'"):
        build_classifier(PretrainConfig(model="resnet18"), 3)
    with pytest.raises(ConfigError, match="stage_defs"):
        build_classifier(PretrainConfig(model="custom", stage_defs=[[1, 8, "vgg", True]]), 3)


def test_pretraining_learns_and_initialises_a_detector(folder, tmp_path):
    cfg = config_from_dict(pretrain_raw(folder, tmp_path, epochs=6))
    trainer = ClassifierTrainer(cfg, run_dir=tmp_path / "cls", progress=False)
    train_eval = build_classification_loader(
        ImageFolderDataset(folder / "train", 32, train=False), batch_size=8, train=False)
    before = evaluate_classifier(trainer.model, train_eval, trainer.device)["top1"]
    summary = trainer.fit()
    after = evaluate_classifier(trainer.model, train_eval, trainer.device)["top1"]
    print(f"train-set top-1: {before:.1f}% -> {after:.1f}%")
    assert after > before and after >= 80.0
    run = tmp_path / "cls"
    assert summary["epoch"] == 6 and {"top1", "top5"} <= summary["metrics"].keys()
    with (run / "results.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 6
    best = load_checkpoint(run / "best.pt", kind="classifier")
    assert best["meta"]["class_names"] == ["blue", "green", "red"] and "trainer" not in best
    assert CSPNet.from_spec(BackboneSpec.from_dict(best["spec"])).spec.to_dict() == best["spec"]
    assert "trainer" in torch.load(run / "last.pt", weights_only=True)

    # the classifier's backbone initialises a detector with the same backbone through model.weights
    det_raw = {"model": {"name": "custom", "num_classes": 2, "stem_channels": 8, "stage_defs": STAGES,
                         "width": 0.5, "weights": str(run / "best.pt")}}
    mcfg = config_from_dict(det_raw).model
    detector = build_detector(mcfg)
    assert "initialised the backbone" in init_weights(detector, mcfg)
    for key, value in detector.backbone.state_dict().items():
        assert torch.equal(value, best["model"][key]), key
    det_raw["model"]["stage_defs"] = STAGES[:3] + [[1, 64, "darknet", True]]
    other = config_from_dict(det_raw).model
    with pytest.raises(CheckpointError, match="does not fit this detector's backbone"):
        init_weights(build_detector(other), other)


def test_pretrain_resume_is_exact(folder, tmp_path):
    cfg = config_from_dict(pretrain_raw(folder, tmp_path, epochs=2))
    ClassifierTrainer(cfg, run_dir=tmp_path / "a", progress=False).fit()
    ClassifierTrainer(cfg, run_dir=tmp_path / "b", progress=False).fit(stop_after=1)
    ClassifierTrainer(cfg, resume=tmp_path / "b", progress=False).fit()
    assert list(yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())) == ["pretrain"]  # the one it uses
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for part in (a["model"], a["trainer"]["model"]):
        other = b["model"] if part is a["model"] else b["trainer"]["model"]
        diff = max((x.double() - other[k].double()).abs().max().item() for k, x in part.items())
        assert diff <= 1e-6
