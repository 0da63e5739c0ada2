"""Fine-tuning (configs/finetune.yaml): a run started from trained weights starts where they were (same weights,
same accuracy), learns a new class set with only the class layers re-initialised (each named in the log),
keeps frozen modules and their BatchNorm statistics fixed, and records where its weights came from."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch

from cspdet.config import ConfigError, config_from_dict, load_config
from cspdet.data.synthetic import make_shapes_dataset
from cspdet.engine.build import build_detector, convert_yolox_checkpoint, load_initial_weights
from cspdet.runtime.checkpoint import load_checkpoint, save_checkpoint
from cspdet.engine.freeze import backbone_units, resolve_freeze
from cspdet.engine.trainer import Trainer
from cspdet.models import create_detector

SIZE = 64


def _raw(dataset: Path, out: Path, name: str, num_classes: int = 3, **train) -> dict:
    """A tiny CSPDarknet (depth 0.33, width 0.125) at 64 px, AdamW, no mosaic: 80 steps reach AP > 0 (~10 s)."""
    return {
        "model": {"name": "cspdarknet_s", "num_classes": num_classes, "depth": 0.33, "width": 0.125},
        "data": {"dataset": str(dataset), "img_size": [SIZE, SIZE], "workers": 0, "mosaic_prob": 0.0,
                 "mixup_prob": 0.0, "degrees": 0.0, "shear": 0.0},
        "train": {"epochs": 20, "batch_size": 4, "optimizer": "adamw", "lr_per_image": 0.001,
                  "weight_decay": 0.0005, "warmup_epochs": 1, "no_aug_epochs": 0, "eval_interval": 0,
                  "ema_decay": 0.99, "save_interval": 100, "output_dir": str(out), "name": name, "log_images": 0,
                  "device": "cpu", **train},
        "eval": {"img_size": [SIZE, SIZE], "batch_size": 8},
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """The shapes (3 classes, 16 images of 64 px) and the same images with one class "shape" for every object.
    Both evaluate on the training images: a run of seconds reaches AP > 0 there."""
    root = tmp_path_factory.mktemp("finetune_data")
    shapes = make_shapes_dataset(root / "shapes", num_train=16, num_val=4, size=SIZE, seed=0)
    ann = json.loads((shapes / "annotations" / "instances_train.json").read_text())
    ann["categories"] = [{"id": 1, "name": "shape", "supercategory": "shape"}]
    for a in ann["annotations"]:
        a["category_id"] = 1
    (shapes / "annotations" / "one_class.json").write_text(json.dumps(ann))
    out = {}
    for name, file in (("three", "instances_train.json"), ("one", "one_class.json")):
        split = f"{{images: images/train, annotations: annotations/{file}}}"
        out[name] = root / f"{name}.yaml"
        out[name].write_text(f"format: coco\npath: {shapes}\ntrain: {split}\nval: {split}\n")
    return out


@pytest.fixture(scope="module")
def source(data, tmp_path_factory) -> dict:
    """A 3-class source model trained briefly from scratch: its best.pt and AP."""
    out = tmp_path_factory.mktemp("finetune_runs")
    summary = Trainer(config_from_dict(_raw(data["three"], out, "source")), run_dir=out / "source",
                      progress=False).fit()
    return {"ckpt": out / "source" / "best.pt", "ap": summary["best_ap"], "out": out}


def _finetune_raw(data, source, dataset: str, name: str, **train) -> dict:
    raw = _raw(data[dataset], source["out"], name, num_classes=3 if dataset == "three" else 1, **train)
    raw["model"]["weights"] = str(source["ckpt"])
    return raw


@pytest.fixture(scope="module")
def new_classes(data, source):
    """A fine-tune of the 3-class source on the 1-class data: (trainer, summary, log text)."""
    import contextlib
    import io

    raw = _finetune_raw(data, source, "one", "new_classes", epochs=4)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        trainer = Trainer(config_from_dict(raw), run_dir=source["out"] / "new_classes", progress=False)
        summary = trainer.fit()
    return trainer, summary, log.getvalue()


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys=None) -> bool:
    return all(torch.equal(a[k], b[k]) for k in (keys or a))


def test_unchanged_classes_start_at_the_sources_accuracy(data, source):
    """Same classes: every tensor is the source's (no silent re-initialisation) and the run's first evaluation,
    before any step, scores exactly the source's AP on the same images."""
    assert source["ap"] > 0, "the source run must have learned something for this comparison to mean anything"
    saved = load_checkpoint(source["ckpt"])["model"]
    trainer = Trainer(config_from_dict(_finetune_raw(data, source, "three", "same_classes", epochs=1)),
                      run_dir=source["out"] / "same_classes", progress=False)
    assert set(trainer.model.state_dict()) == set(saved)
    assert _equal(saved, trainer.model.state_dict()) and _equal(saved, trainer.ema.ema.state_dict())
    assert trainer.evaluate(-1, outputs=False)["AP"] == pytest.approx(source["ap"], abs=1e-12)
    trainer._release()
    # the report says nothing was re-initialised
    loaded = load_initial_weights(build_detector(trainer.cfg.model), trainer.cfg.model)
    assert loaded.reinitialised == [] and f"{len(saved)} of {len(saved)} tensors loaded" in loaded.report


def test_new_class_set_reinitialises_only_the_class_layers_and_learns(source, new_classes):
    trainer, summary, log = new_classes
    saved = load_checkpoint(source["ckpt"])["model"]
    fresh = build_detector(trainer.cfg.model)
    loaded = load_initial_weights(fresh, trainer.cfg.model)
    expected = [f"head.levels.{i}.cls_pred.{p}" for i in range(3) for p in ("weight", "bias")]
    assert sorted(loaded.reinitialised) == sorted(expected)
    assert _equal(saved, fresh.state_dict(), [k for k in saved if k not in expected])  # the rest is the source's
    assert "6 class-dependent head tensors re-initialised" in log and all(k in log for k in expected)
    # it learns the new class set: the class loss falls and the one class is found
    with (Path(summary["run_dir"]) / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[-1]["train/cls_loss"]) < float(rows[0]["train/cls_loss"])
    assert summary["best_ap"] > 0


def test_freeze_keeps_weights_and_batchnorm_statistics(data, source):
    """freeze=backbone: the backbone (parameters and BN running statistics) is bit-identical after training,
    through the trainer's model.train() of every epoch, while the neck (weights and BN statistics) moves."""
    raw = _finetune_raw(data, source, "three", "frozen", epochs=2, freeze="backbone")
    saved = load_checkpoint(source["ckpt"])["model"]
    trainer = Trainer(config_from_dict(raw), run_dir=source["out"] / "frozen", progress=False)
    assert all(not p.requires_grad for p in trainer.model.backbone.parameters())
    assert all(p.requires_grad for p in trainer.model.neck.parameters())
    trainer.fit()
    state = trainer.model.state_dict()
    backbone = [k for k in state if k.startswith("backbone.")]
    neck_bn = [k for k in state if k.startswith("neck.") and k.endswith("running_mean")]
    assert backbone and _equal(saved, state, backbone)
    assert any(not torch.equal(saved[k], state[k]) for k in state if k.startswith("neck.") and "conv.weight" in k)
    assert any(not torch.equal(saved[k], state[k]) for k in neck_bn)  # not frozen: statistics follow the data
    # the EMA, and so best.pt / last.pt, keep the frozen tensors exactly too
    assert _equal(saved, trainer.ema.ema.state_dict(), backbone)
    assert _equal(saved, load_checkpoint(source["out"] / "frozen" / "last.pt")["model"], backbone)


def test_freeze_names_and_counts(repo_root):
    model = create_detector("cspdarknet_nano", num_classes=3)
    assert resolve_freeze(model, 2) == ["backbone.stem", "backbone.stages.0"]
    assert resolve_freeze(model, ["backbone.stages.0", "neck"]) == ["backbone.stages.0", "neck"]
    assert resolve_freeze(model, 0) == [] and resolve_freeze(model, None) == []
    with pytest.raises(ConfigError, match=r"train.freeze: 9 but the backbone has 5 modules"):
        resolve_freeze(model, 9)
    with pytest.raises(ConfigError, match=r"train.freeze: 'backbon' is no module of this model"):
        resolve_freeze(model, "backbon")
    v8 = create_detector("yolov8n_layout", num_classes=3)
    assert backbone_units(v8)[:2] == ["backbone.stem", "backbone.stages.0"] and "backbone.sppf" in backbone_units(v8)
    with pytest.raises(ConfigError, match=r"train.freeze: expected a count >= 0"):
        load_config(repo_root / "configs" / "finetune.yaml", ["train.freeze=-1"])
    assert load_config(repo_root / "configs" / "finetune.yaml", ["train.freeze=backbone"]).train.freeze == "backbone"


def test_meta_source_records_the_weights(source, new_classes, tmp_path):
    trainer, summary, _ = new_classes
    parent = load_checkpoint(source["ckpt"])["meta"]["source"]
    assert parent == {"path": None, "format": "scratch", "sha256": None, "licence": None,
                      "trained_in": str(source["out"] / "source")}
    digest = hashlib.sha256(Path(source["ckpt"]).read_bytes()).hexdigest()
    for name in ("best.pt", "last.pt"):
        meta = load_checkpoint(Path(summary["run_dir"]) / name)["meta"]
        assert meta["source"] == {"path": str(source["ckpt"]), "format": "cspdet", "sha256": digest,
                                  "licence": "Apache-2.0", "parent": parent, "trained_in": summary["run_dir"]}
    # weights keep the licence of their origin through fine-tuning (here: a checkpoint converted from AGPL weights)
    ckpt = load_checkpoint(source["ckpt"])
    ckpt["meta"]["source"] = {"path": "yolo26n.pt", "format": "ultralytics", "sha256": "0" * 64,
                              "licence": "AGPL-3.0 (or an Ultralytics Enterprise licence)"}
    save_checkpoint(ckpt, tmp_path / "converted.pt")
    cfg = config_from_dict(_raw(tmp_path, tmp_path, "x")).model
    cfg.weights = str(tmp_path / "converted.pt")
    record = load_initial_weights(build_detector(cfg), cfg).source
    assert record["licence"].startswith("AGPL-3.0") and record["parent"]["format"] == "ultralytics"
    # YOLOX weights (a YOLOX-Nano layout file): Apache-2.0, loaded directly or converted
    from weights_helpers import cspdet_to_yolox_state_dict

    yolox = tmp_path / "yolox_nano.pth"
    torch.save({"model": cspdet_to_yolox_state_dict(create_detector("cspdarknet_nano").state_dict()),
                "start_epoch": 300}, yolox)
    nano = config_from_dict({"model": {"name": "cspdarknet_nano", "num_classes": 3, "weights": str(yolox)}}).model
    loaded = load_initial_weights(build_detector(nano), nano)
    assert loaded.source == {"path": str(yolox), "format": "yolox", "licence": "Apache-2.0",
                             "sha256": hashlib.sha256(yolox.read_bytes()).hexdigest()}
    assert len(loaded.reinitialised) == 6  # 80 COCO classes -> 3: the class layers only
    converted = convert_yolox_checkpoint(yolox, tmp_path / "yolox_cspdet.pt")
    assert converted["meta"]["source"] == loaded.source
