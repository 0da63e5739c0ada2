"""``cspdet convert`` / ``predict`` / ``val`` / ``export`` / ``benchmark`` with Ultralytics checkpoints (hand-made,
tests/ultralytics_helpers.py; Ultralytics is never imported): a good file converts or is used as it is, a file
that would run code is refused with one line at every command and the code never runs."""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np
import pytest
import torch

from test_train_cli import descriptor, tiny_config  # tests/tools/test_train_cli.py

from cspdet.cli import main
from cspdet.runtime.checkpoint import load_checkpoint

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ultralytics_helpers import build_tree, fake_ultralytics, to_ultralytics_names  # noqa: E402  tests/


class _System:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(good Ultralytics-like yolo26n file, the same with a payload, marker path, an image)."""
    from cspdet.models import create_detector

    d = tmp_path_factory.mktemp("ultra")
    torch.manual_seed(0)
    model = create_detector("yolo26n_layout", prior_prob=0.5)  # scores above conf, so predict draws boxes
    state = to_ultralytics_names(model.state_dict())
    marker = d / "code_ran"
    with fake_ultralytics() as classes:
        tree = build_tree(state, classes)
        torch.save({"model": tree, "ema": None, "version": "8.4.0"}, d / "yolo26n.pt")
        torch.save({"model": tree, "ema": None, "version": "8.4.0", "train_args": {"x": _System(marker)}},
                   d / "evil.pt")
    image = d / "img.jpg"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    return d / "yolo26n.pt", d / "evil.pt", marker, image


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_convert_and_predict_an_ultralytics_file(files, tmp_path, capsys):
    good, _, _, image = files
    out = tmp_path / "y26_cspdet.pt"
    assert main(["convert", str(good), "--out", str(out), "--names", *[f"n{i}" for i in range(80)]]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}: yolo26n_layout, 80 classes, img_size 640"
    ckpt = load_checkpoint(out, kind="detector")  # a normal v2 cspdet checkpoint, weights_only loadable
    assert ckpt["meta"]["class_names"][1] == "n1" and ckpt["meta"]["source"]["format"] == "ultralytics"
    assert ckpt["meta"]["source"]["licence"].startswith("AGPL-3.0")
    # predict takes the Ultralytics file itself (converted on the fly) and the converted one alike
    for weights in (good, out):
        assert main(["predict", str(image), "--weights", str(weights), "--out", str(tmp_path / weights.stem),
                     "--device", "cpu", "--img-size", "96", "128", "--save-txt"]) == 0
    capsys.readouterr()
    a, b = ((tmp_path / w.stem / "labels" / "img.txt").read_text() for w in (good, out))
    assert a == b and a.strip()


def test_a_payload_is_refused_with_one_line_everywhere(files, tmp_path, capsys):
    _, evil, marker, image = files
    data = descriptor(tmp_path)
    cfg = tiny_config(tmp_path / "cfg.yaml", data, tmp_path / "runs")
    commands = [
        ["convert", str(evil), "--out", str(tmp_path / "x.pt")],
        ["predict", str(image), "--weights", str(evil), "--out", str(tmp_path / "p")],
        ["val", str(evil), f"data.dataset={data}"],
        ["export", str(evil), "--format", "onnx"],
    ]
    for argv in commands:
        assert main(argv) != 0, argv
        line = _one_line(capsys.readouterr().err)
        assert "refused" in line and "posix.system" in line and str(evil) in line, (argv, line)
    # benchmark reports each format's failure in its table row: the refusal is that row's error
    assert main(["benchmark", str(evil), "--data", str(cfg), "--formats", "pytorch", "--out", str(tmp_path / "b")]) != 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert "refused: the file names posix.system" in captured.out + captured.err
    assert not marker.exists()
    assert not (tmp_path / "x.pt").exists()
