"""Ultralytics checkpoint import without Ultralytics: hand-made pickles with Ultralytics' module paths (fake classes
registered only while pickling, tests/ultralytics_helpers.py) convert back to the cspdet weights they came from,
exactly; pickles that would run code or name an unexpected class are refused with one line and nothing runs.
Output parity against Ultralytics itself is benchmarks/check_ultralytics_parity.py (Ultralytics is AGPL: never
imported here)."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess

import pytest
import torch
from torch import nn
from ultralytics_helpers import build_tree, fake_ultralytics, to_ultralytics_names  # tests/ultralytics_helpers.py

from cspdet.runtime.weights import detector_from_checkpoint
from cspdet.runtime.checkpoint import CheckpointError, load_state_file
from cspdet.models import Detector, DetectorSpec, create_detector
from cspdet.models.ultralytics_weights import (
    ULTRALYTICS_LICENCE,
    UltralyticsWeightsError,
    convert_ultralytics,
    is_ultralytics_checkpoint,
    read_ultralytics_file,
)


def _randomized(name: str) -> Detector:
    torch.manual_seed(0)
    model = create_detector(name).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def _save_fake(path, state, acts=None, **extra):
    """An Ultralytics-style checkpoint ({'model': fp16 module tree, 'ema': None, ...}) at ``path``."""
    with fake_ultralytics() as classes:
        tree = build_tree(state, classes, acts)
        torch.save({"model": tree, "ema": None, "date": "2026-01-01", "version": "8.4.0", "license": "AGPL-3.0",
                    "train_args": {"imgsz": 416, "epochs": 3}, **extra}, path)
    return path


def _expected(value: torch.Tensor, key: str) -> torch.Tensor:
    """What the converter must give for a cspdet tensor that went through Ultralytics' fp16 file."""
    if key == "backbone.stem.conv.weight":
        return (value * 255).half().float() / 255
    return value.half().float() if value.is_floating_point() else value


@pytest.mark.parametrize("name", ["yolov8n_layout", "yolo11n_layout", "yolo26n_layout"])
def test_fake_ultralytics_checkpoint_converts_back_exactly(name, tmp_path):
    model = _randomized(name)
    state = model.state_dict()
    shared = nn.SiLU()  # Ultralytics' conv units share one activation instance: shared is not a loop
    path = _save_fake(tmp_path / "fake.pt", to_ultralytics_names(state), {"model.1.act": shared, "model.3.act": shared})
    assert is_ultralytics_checkpoint(path)
    with pytest.raises(Exception):  # what cspdet's normal loader does with it: weights_only refuses the classes
        torch.load(path, weights_only=True)
    ckpt = convert_ultralytics(path)
    assert ckpt["meta"]["preset"] == name and ckpt["meta"]["class_names"][3] == "class3"
    assert ckpt["meta"]["img_size"] == [416, 416]
    assert ckpt["meta"]["source"] == {"file": str(path), "format": "ultralytics", "version": "8.4.0",
                                      "licence": ULTRALYTICS_LICENCE, "weights": "model", "yaml_file": "fake.yaml"}
    assert set(ckpt["model"]) == set(state)
    for key, value in state.items():
        assert torch.equal(ckpt["model"][key], _expected(value, key)), key
    # the rebuilt model computes what the original computes with those fp16-rounded weights
    rebuilt = Detector.from_spec(DetectorSpec.from_dict(ckpt["spec"])).eval()
    rebuilt.load_state_dict(ckpt["model"])
    model.load_state_dict({k: _expected(v, k) for k, v in state.items()})
    if name == "yolo26n_layout":  # YOLO26 decodes raw distances, the preset softplus ones: compare the raw head
        assert rebuilt.head.distance_act == "identity"
        model.head.distance_act = "identity"
    x = torch.rand(1, 3, 64, 96) * 255
    with torch.no_grad():
        assert (rebuilt(x) - model(x)).abs().max().item() <= 1e-4


def test_ema_entry_plain_state_dict_and_csptal(tmp_path):
    model = _randomized("yolov8n_layout")
    ultra = to_ultralytics_names(model.state_dict())
    # a training checkpoint: the weights are in 'ema', 'model' is None
    with fake_ultralytics() as classes:
        torch.save({"model": None, "ema": build_tree(ultra, classes), "epoch": 3}, tmp_path / "last.pt")
    assert read_ultralytics_file(tmp_path / "last.pt").weights_from == "ema"
    assert convert_ultralytics(tmp_path / "last.pt")["meta"]["preset"] == "yolov8n_layout"
    # a plain state dict with Ultralytics' names: weights_only loadable, converted by the normal loader too
    torch.save(ultra, tmp_path / "plain.pt")
    loaded = load_state_file(tmp_path / "plain.pt")
    assert loaded["format"] == "cspdet" and loaded["meta"]["class_names"][0] == "person"  # 80 classes: COCO's
    # csptal_n from YOLOv8n weights: the one-to-one branch starts as a copy of the one-to-many one
    ckpt = convert_ultralytics(tmp_path / "last.pt", "csptal_n")
    assert ckpt["meta"]["preset"] == "csptal_n"
    for key, value in ckpt["model"].items():
        if key.startswith("head.o2o_levels."):
            assert torch.equal(value, ckpt["model"]["head.levels." + key[len("head.o2o_levels."):]])
    with pytest.raises(UltralyticsWeightsError, match="yolov8n weights, not csptal_s"):
        convert_ultralytics(tmp_path / "last.pt", "csptal_s")


def test_sppf_activation_follows_the_file(tmp_path):
    """The first SPPF conv is linear where the file's module says so (Ultralytics 8.4 builds it so from some yaml
    rows), whatever the family's usual choice; the spec records it and the outputs follow it."""
    model = _randomized("yolo11n_layout")
    ultra = to_ultralytics_names(model.state_dict())
    linear = convert_ultralytics(_save_fake(tmp_path / "a.pt", ultra, {"model.9.cv1.act": nn.Identity()}))
    silu = convert_ultralytics(_save_fake(tmp_path / "b.pt", ultra, {"model.9.cv1.act": nn.SiLU()}))
    assert linear["spec"]["backbone"]["options"]["sppf_options"] == {"conv1_act": False}
    assert "sppf_options" not in silu["spec"]["backbone"]["options"]
    outs = []
    for ckpt in (linear, silu):
        det = Detector.from_spec(DetectorSpec.from_dict(ckpt["spec"])).eval()
        det.load_state_dict(ckpt["model"])
        assert det.backbone.sppf.conv1.act.__class__.__name__ == ("Identity" if ckpt is linear else "SiLU")
        with torch.no_grad():
            outs.append(det.backbone(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255)[-1])
    assert (outs[0] - outs[1]).abs().max().item() > 1e-3
    odd = _save_fake(tmp_path / "c.pt", ultra, {"model.2.cv1.act": nn.ReLU()})
    with pytest.raises(UltralyticsWeightsError, match=r"model\.2\.cv1\.act \(ReLU\)"):
        convert_ultralytics(odd)


class _Exec:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').write('code ran')",)


class _System:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Popen:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return subprocess.Popen, (["touch", self.marker],)


@pytest.mark.parametrize("payload, named", [(_Exec, "builtins.exec"), (_System, "posix.system"),
                                            (_Popen, "subprocess.Popen")])
def test_code_in_an_ultralytics_pickle_is_refused_with_one_line(payload, named, tmp_path):
    marker = tmp_path / "code_ran"
    state = to_ultralytics_names(_randomized("yolov8n_layout").state_dict())
    path = _save_fake(tmp_path / "evil.pt", state, train_args={"imgsz": 640, "hook": payload(marker)})
    assert is_ultralytics_checkpoint(path)
    with pytest.raises(UltralyticsWeightsError) as err:
        read_ultralytics_file(path)
    message = str(err.value)
    assert "\n" not in message and named in message and "refused" in message and str(path) in message
    for loader in (load_state_file, detector_from_checkpoint):  # every entry point reads through load_state_file
        with pytest.raises(CheckpointError, match=f"refused: .*{named}.*could run code"):
            loader(path)
    assert not marker.exists()


def test_unknown_class_and_crafted_eval_are_refused(tmp_path):
    marker = tmp_path / "code_ran"
    state = to_ultralytics_names(_randomized("yolov8n_layout").state_dict())
    with fake_ultralytics() as classes:  # a class name under ultralytics' own namespace that no model has
        tree = build_tree(state, classes)
        tree._modules["model"]._modules["0"]._modules["x"] = classes["Evil"]()
        torch.save({"model": tree}, tmp_path / "unknown.pt")
    with pytest.raises(UltralyticsWeightsError, match=r"refused: the file names ultralytics\.nn\.modules\.block\.Evil"):
        read_ultralytics_file(tmp_path / "unknown.pt")
    with fake_ultralytics() as classes:  # known classes, but a module tree that contains itself
        tree = build_tree(state, classes)
        tree._modules["model"]._modules["loop"] = tree
        torch.save({"model": tree}, tmp_path / "loop.pt")
    with pytest.raises(UltralyticsWeightsError, match="loops"):
        read_ultralytics_file(tmp_path / "loop.pt")
    # raw pickle bytes (protocol 2): {'x': builtins.eval(<code>), 'model': DetectionModel()}
    code = f"open({str(marker)!r}, 'w').write('code ran')".encode()

    def text(b: bytes) -> bytes:
        return b"X" + len(b).to_bytes(4, "little") + b

    crafted = (b"\x80\x02}(" + text(b"x") + b"c__builtin__\neval\n" + text(code) + b"\x85R" + text(b"model")
               + b"cultralytics.nn.tasks\nDetectionModel\n)\x81u.")
    path = tmp_path / "crafted.pt"
    path.write_bytes(crafted)
    assert is_ultralytics_checkpoint(path)
    with pytest.raises(UltralyticsWeightsError, match=r"refused: the file names builtins\.eval"):
        read_ultralytics_file(path)
    with pytest.raises(CheckpointError, match=r"refused: .*builtins\.eval"):
        load_state_file(path)
    assert not marker.exists()
    with pytest.raises(ModuleNotFoundError):  # sanity: plain pickle runs the payload (then misses ultralytics)
        pickle.loads(crafted)
    assert marker.read_text() == "code ran"


def test_runtime_kind_and_fine_tuning_from_an_ultralytics_file(tmp_path):
    """The runtime names the file's kind once (``ultralytics``), ``open_model`` runs it as it is, and
    ``model.weights=`` starts a detector from it: every tensor loaded when the classes agree, the class layers alone
    fresh (and listed) when they do not, and the AGPL licence carried into ``meta.source``."""
    from cspdet.config import ModelConfig
    from cspdet.engine.build import load_initial_weights
    from cspdet.runtime import open_model
    from cspdet.runtime.weights import read_weights

    model = _randomized("yolov8n_layout")
    path = _save_fake(tmp_path / "fake.pt", to_ultralytics_names(model.state_dict()))
    weights = read_weights(path)
    assert weights.kind == "ultralytics" and weights.obj["format"] == "cspdet"
    opened = open_model(path, fuse=False)
    assert opened.meta.preset == "yolov8n_layout" and opened.num_classes == 80

    same = create_detector("yolov8n_layout")
    done = load_initial_weights(same, ModelConfig(name="yolov8n_layout", weights=str(path)))
    assert done.reinitialised == [] and done.source["licence"].startswith("AGPL-3.0")
    for key, value in model.state_dict().items():
        assert torch.equal(same.state_dict()[key], _expected(value, key)), key

    other = create_detector("yolov8n_layout", num_classes=3)
    done = load_initial_weights(other, ModelConfig(name="yolov8n_layout", num_classes=3, weights=str(path)))
    assert done.reinitialised and all(".cls" in k or "cls_" in k or "class" in k for k in done.reinitialised), \
        done.reinitialised
    assert all(k in done.report for k in done.reinitialised)
    kept = [k for k in model.state_dict() if k not in done.reinitialised]
    assert all(torch.equal(other.state_dict()[k], _expected(model.state_dict()[k], k)) for k in kept)
