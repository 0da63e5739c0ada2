"""cspdet.engine.build: official YOLOX checkpoints become cspdet detector checkpoints."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from weights_helpers import cspdet_to_yolox_state_dict  # tests/weights_helpers.py

from cspdet.data.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
from cspdet.engine.build import convert_yolox_checkpoint
from cspdet.runtime.weights import detector_from_checkpoint
from cspdet.models import create_detector


def make_yolox_pth(path, name="cspdarknet_nano", num_classes=80):
    torch.manual_seed(0)
    source = create_detector(name, num_classes=num_classes).eval()
    with torch.no_grad():
        for key, value in source.state_dict().items():
            if "running_var" in key:
                value.uniform_(0.5, 1.5)
            elif value.dtype.is_floating_point:
                value.normal_(0, 0.1)
    torch.save({"model": cspdet_to_yolox_state_dict(source.state_dict()), "start_epoch": 300}, path)
    return source


def test_converted_checkpoint_predicts_like_the_source(tmp_path):
    source = make_yolox_pth(tmp_path / "yolox_nano.pth")
    ckpt = convert_yolox_checkpoint(str(tmp_path / "yolox_nano.pth"), str(tmp_path / "nano.pt"), "cspdarknet_nano")
    meta = ckpt["meta"]
    assert meta["class_names"] == list(COCO_CLASSES) and meta["category_ids"] == list(COCO_CATEGORY_IDS)
    assert meta["img_size"] == [416, 416] and meta["preset"] == "cspdarknet_nano"
    assert ckpt["version"] == 2 and "config" not in ckpt  # a converted model has no training run behind it
    model, loaded = detector_from_checkpoint(tmp_path / "nano.pt")
    assert model.meta.class_names == list(COCO_CLASSES) and model.meta.img_size == (416, 416)
    x = torch.rand(1, 3, 64, 64) * 255
    assert torch.equal(model(x), source(x))


def test_convert_yolox_cli(tmp_path, repo_root):
    make_yolox_pth(tmp_path / "yolox_nano.pth")
    out = tmp_path / "converted.pt"
    cmd = [sys.executable, str(repo_root / "tools" / "convert_yolox.py"), str(tmp_path / "yolox_nano.pth"),
           "--model", "cspdarknet_nano", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert out.is_file() and "cspdarknet_nano" in result.stdout
    # a wrong preset: one line naming the preset that fits (not hundreds of key names)
    wrong = subprocess.run([*cmd[:3], "--model", "cspdarknet_s", "--out", str(out)], capture_output=True,
                           text=True, timeout=300)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines() == [
        (f"cspdet convert: error: {tmp_path / 'yolox_nano.pth'}: these are YOLOX-Nano weights, not YOLOX-S: use "
         "--model cspdarknet_nano or leave --model out")]


@pytest.mark.parametrize("size", ["nano", "tiny", "s", "m", "l", "x"])
def test_yolox_size_is_read_from_the_weights(size):
    """Every YOLOX size is told apart by its stem width, CSP depth and depthwise convs, and the classes by the
    head; the weights are made from the spec's shapes alone (no 99 M-parameter model is built)."""
    from cspdet.models import infer_yolox_preset

    with torch.device("meta"):  # shapes only
        detector = create_detector(f"cspdarknet_{size}", num_classes=7)
    state = cspdet_to_yolox_state_dict({k: torch.empty(v.shape) for k, v in detector.state_dict().items()})
    assert infer_yolox_preset({"model": state}) == (f"cspdarknet_{size}", 7)


def test_cspdet_convert_infers_the_model_and_classes(tmp_path):
    """``cspdet convert yolox.pth --out x.pt``: no --model, no --from; a 5-class model gets placeholder names,
    and --names of the wrong length is one line."""
    from cspdet.cli import main

    make_yolox_pth(tmp_path / "yolox_tiny.pth", name="cspdarknet_tiny", num_classes=5)
    assert main(["convert", str(tmp_path / "yolox_tiny.pth"), "--out", str(tmp_path / "t.pt")]) == 0
    model, _ = detector_from_checkpoint(tmp_path / "t.pt")
    assert model.meta.preset == "cspdarknet_tiny" and model.meta.class_names == ["0", "1", "2", "3", "4"]
    assert model.meta.img_size == (416, 416) and model.meta.category_ids == [0, 1, 2, 3, 4]
    assert main(["convert", str(tmp_path / "yolox_tiny.pth"), "--out", str(tmp_path / "n.pt"),
                 "--names", "a", "b"]) == 2
    assert not (tmp_path / "n.pt").exists()


def test_model_head_options_reach_the_head_or_are_refused_by_name():
    """``model.head_options``: the head's own constructor options on top of the preset (a mapping); a preset whose
    family takes none, a bad value or a non-mapping is a one-line ConfigError."""
    from cspdet.config import ConfigError, config_from_dict
    from cspdet.engine.build import build_detector

    cfg = config_from_dict({"model": {"name": "csptal_n", "num_classes": 2, "head_options": {"o2o_detach": False}}})
    model = build_detector(cfg.model)
    assert model.head.o2o_detach is False and model.spec.head.options["o2o_detach"] is False
    # options the preset passes itself (one2one, reg_max) are the user's to change too, never silently kept
    no_o2o = build_detector(config_from_dict({"model": {"name": "csptal_n", "head_options": {"one2one": False}}}).model)
    assert no_o2o.head.one2one is False and no_o2o.nms_free is False and "one2one" not in no_o2o.spec.head.options
    dfl = build_detector(config_from_dict({"model": {"name": "yolo26n_layout", "head_options": {"reg_max": 16}}}).model)
    assert dfl.head.reg_max == 16 and dfl.head.one2one is True
    # keyed by head kind: applied to a model with that head, not passed to another (a recipe for any model)
    keyed = {"tal": {"o2m_final": 0.5, "nms_free": False}}
    tal = build_detector(config_from_dict({"model": {"name": "csptal_n", "head_options": keyed}}).model)
    assert tal.nms_free is False and tal.head.spec.options["o2m_final"] == 0.5
    yolox = build_detector(config_from_dict({"model": {"name": "cspdarknet_nano", "head_options": keyed}}).model)
    assert yolox.spec.head.kind == "yolox"
    with pytest.raises(ConfigError, match="model.head_options.tal: expected a mapping"):
        build_detector(config_from_dict({"model": {"name": "csptal_n", "head_options": {"tal": 3}}}).model)
    for model_cfg, match in (({"name": "cspdarknet_nano", "head_options": {"o2o_detach": False}},
                              "head_options .* are for another head: key them by head kind"),
                             ({"name": "csptal_n", "head_options": {"reg_max": 0}}, "reg_max"),
                             ({"name": "csptal_n", "head_options": {"nonsense": 1}}, "nonsense")):
        with pytest.raises(ConfigError, match=match):
            build_detector(config_from_dict({"model": model_cfg}).model)
    with pytest.raises(ConfigError, match="model.head_options: expected a mapping"):
        config_from_dict({"model": {"name": "csptal_n", "head_options": [1]}})
