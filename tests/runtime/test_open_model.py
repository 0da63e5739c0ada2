"""open_model / weights_kind: one loader for every weights file, every result an InferenceModel; and the commands
that work from the checkpoint alone (export names its file, benchmark and val find the recorded dataset)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
from export_helpers import HW, live_detector  # tests/export_helpers.py

from cspdet.export import export_detector
from cspdet.models import DetectorMeta
from cspdet.runtime import InferenceModel, open_model, weights_kind
from cspdet.runtime.backends import DeployedDetector
from cspdet.runtime.checkpoint import new_checkpoint, save_checkpoint
from cspdet.runtime.cpu import FastCPUDetector
from cspdet.runtime.open import NotAModelError


def _save(model, path: Path, **meta) -> Path:
    m = DetectorMeta.from_dict({**model.meta.to_dict(), **meta})
    return save_checkpoint(new_checkpoint("detector", model.spec.to_dict(), m.to_dict(), model.state_dict()), path)


@pytest.fixture(scope="module")
def nano():
    return live_detector("cspdarknet_nano")


def test_every_model_satisfies_the_contract(nano, tmp_path):
    weights = _save(nano, tmp_path / "nano.pt")
    models = {"detector": nano, "checkpoint": open_model(weights),
              "fast_cpu": open_model(weights, channels_last=True)}
    for fmt in ("onnx", "openvino", "torchscript"):
        path = export_detector(nano, fmt, tmp_path / f"nano.{'xml' if fmt == 'openvino' else fmt}").path
        models[fmt] = open_model(path)
    assert isinstance(models["fast_cpu"], FastCPUDetector)
    assert all(isinstance(models[f], DeployedDetector) for f in ("onnx", "openvino", "torchscript"))
    images = torch.full((1, 3, *HW), 114.0)
    for name, model in models.items():
        assert isinstance(model, InferenceModel), name
        assert model.num_classes == 80 and tuple(model.strides) == (8, 16, 32), name
        assert model.meta.class_names == nano.meta.class_names, name
        assert model.fixed_input_size in (None, HW), name
        model.check_input_size(HW)
        with pytest.raises(ValueError):
            model.check_input_size((HW[0] + 1, HW[1]))
        dets = model.predict(images, conf=0.2)
        assert len(dets) == 1 and set(dets[0]) == {"boxes", "scores", "labels"}, name
    assert models["openvino"].fixed_input_size == HW and models["onnx"].fixed_input_size == HW


def test_weights_kind_decides_every_file(nano, tmp_path):
    weights = _save(nano, tmp_path / "nano.pt")
    onnx = export_detector(nano, "onnx", tmp_path / "nano.onnx").path
    ts = export_detector(nano, "torchscript", tmp_path / "ts.pt").path  # a TorchScript archive named .pt
    yolox = save_checkpoint({"model": {"backbone.backbone.stem.conv.conv.weight": torch.zeros(1)}}, tmp_path / "y.pth")
    timm = save_checkpoint({"stem.conv1.conv.weight": torch.zeros(1)}, tmp_path / "t.pth")
    other = save_checkpoint({"weight": torch.zeros(1)}, tmp_path / "o.pth")
    assert [weights_kind(p) for p in (weights, onnx, ts, yolox, timm, other)] == [
        "cspdet", "onnx", "torchscript", "yolox", "timm", ""]
    with pytest.raises(NotAModelError, match="official YOLOX checkpoint: convert it") as err:
        open_model(yolox)
    assert err.value.kind == "yolox"
    with pytest.raises(NotAModelError, match="timm backbone weights"):
        open_model(timm)
    with pytest.raises(Exception, match="not a cspdet checkpoint"):
        open_model(other)


def test_export_names_the_file_by_its_format(nano, tmp_path, monkeypatch):
    from cspdet.cli.export import export as export_cli

    weights = _save(nano, tmp_path / "best.pt")
    monkeypatch.chdir(tmp_path)
    assert export_cli([str(weights), "--format", "onnx", "--out", "model"]) == 0
    assert (tmp_path / "model.onnx").is_file() and not (tmp_path / "model").exists()
    assert export_cli([str(weights), "--format", "openvino", "--out", "ov/model"]) == 0
    assert (tmp_path / "ov" / "model.xml").is_file() and (tmp_path / "ov" / "model.bin").is_file()
    (tmp_path / "deploy").mkdir()
    assert export_cli([str(weights), "--format", "torchscript", "--out", "deploy"]) == 0
    assert weights_kind(tmp_path / "deploy" / "best.torchscript") == "torchscript"
    assert export_cli([str(weights), "--format", "onnx", "--out", "explicit.name.onnx"]) == 0
    assert (tmp_path / "explicit.name.onnx").is_file()


def _trained_elsewhere(nano, tmp_path, subset: Path) -> Path:
    """A checkpoint whose run named its dataset relative to the training folder (``train/``) and recorded where
    that really was (``meta.dataset_path``), as the trainer does."""
    train_dir = tmp_path / "train"
    (train_dir / "data").mkdir(parents=True)
    descriptor = train_dir / "data" / "ds.yaml"
    descriptor.write_text(subset.read_text())  # its own paths are absolute
    return _save(nano, train_dir / "best.pt", dataset="data/ds.yaml", dataset_path=str(descriptor.resolve()),
                 img_size=HW)


def test_val_and_benchmark_find_the_recorded_dataset_from_another_folder(nano, tmp_path, monkeypatch,
                                                                         coco128_val_subset, capsys):
    from cspdet.cli.benchmark import benchmark as benchmark_cli
    from cspdet.cli.val import val

    weights = _trained_elsewhere(nano, tmp_path, coco128_val_subset(2))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert val([str(weights), "--out", "v", "--no-plots", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"on {tmp_path / 'train' / 'data' / 'ds.yaml'} (val, 2 images) at {HW[0]}x{HW[1]}" in out
    # without the absolute location (an older checkpoint) it says where it looked
    old = _save(nano, tmp_path / "old.pt", dataset="data/ds.yaml", img_size=HW)
    assert val([str(old), "--out", "v2"]) == 2
    assert "its dataset data/ds.yaml is not found (relative to where it was trained)" in capsys.readouterr().err
    # benchmark: no --data (the checkpoint's dataset and size), then --data as a dataset yaml
    assert benchmark_cli([str(weights), "--formats", "pytorch", "--images", "1", "--out", "b1"]) == 0
    rows = list(csv.DictReader((elsewhere / "b1" / "benchmark.csv").open()))
    assert [r["format"] for r in rows] == ["pytorch"] and not rows[0]["error"] and float(rows[0]["map50_95"]) >= 0
    assert benchmark_cli([str(old), "--formats", "pytorch", "--images", "1", "--out", "b2", "--data",
                          str(tmp_path / "train" / "data" / "ds.yaml")]) == 0
    assert benchmark_cli([str(old), "--formats", "pytorch", "--out", "b3"]) == 2
    assert "records no dataset found from here" in capsys.readouterr().err


def test_int8_export_calibrates_on_the_recorded_dataset(nano, tmp_path, monkeypatch, coco128_val_subset):
    pytest.importorskip("onnxruntime.quantization")
    from cspdet.cli.export import export as export_cli

    weights = _trained_elsewhere(nano, tmp_path, coco128_val_subset(2))
    monkeypatch.chdir(tmp_path)
    assert export_cli([str(weights), "--format", "onnx", "--int8", "--calib", "2", "--out", "q"]) == 0
    assert open_model(tmp_path / "q.onnx").backend.info["precision"] == "int8"
    assert os.path.getsize(tmp_path / "q.onnx") > 0


def test_an_exported_file_keeps_its_heads_eval_defaults(nano, tmp_path):
    """The evaluator scores a deployed file with the conf / iou / max_det of the head it was exported from."""
    import copy
    import dataclasses

    from cspdet.models import DecoupledHead

    class StrictHead(DecoupledHead):
        @property
        def eval_defaults(self):
            return dataclasses.replace(super().eval_defaults, conf=0.2, iou=0.5, max_det=7)

    strict = copy.deepcopy(nano)
    strict.head.__class__ = StrictHead
    for model, name in ((nano, "nano"), (strict, "strict")):
        deployed = open_model(export_detector(model, "onnx", tmp_path / f"{name}.onnx").path)
        assert deployed.eval_defaults == model.eval_defaults, name
