"""A checkpoint that would run code when unpickled is refused, with one line, at every place cspdet loads
weights: ``train.py --resume``, ``model.weights``, ``pretrain.py --resume``, ``eval.py --weights``,
``detect.py --weights`` and ``Predictor.from_checkpoint``; the code never runs."""

from __future__ import annotations

import builtins
import pickle

import cv2
import numpy as np
import pytest
import torch
from test_train_cli import descriptor, load_tool, tiny_config  # tests/tools/test_train_cli.py

from cspdet.runtime.checkpoint import CheckpointError


class _Payload:
    """Unpickling this calls ``exec`` with code that leaves a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').write('code ran')",)


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    """(checkpoint path, marker path): a cspdet-looking detector checkpoint whose weights carry the payload."""
    d = tmp_path_factory.mktemp("evil")
    marker = d / "code_ran"
    path = d / "evil.pt"
    torch.save({"format": "cspdet", "kind": "detector", "version": 1, "config": {}, "class_names": ["a"],
                "model": {"w": torch.zeros(1)}, "epoch": 1, "trainer": {"payload": _Payload(marker)}}, path)
    pickle.loads(pickle.dumps(_Payload(marker)))  # sanity: unpickling the payload (what an unsafe load does) runs code
    assert marker.read_text() == "code ran"
    marker.unlink()
    return path, marker


def _refused(err: str, path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(path) in lines[0] and "refused" in lines[0] and "could run code" in lines[0], lines[0]


def test_refused_at_every_entry_point(evil, tmp_path, capsys):
    path, marker = evil
    cfg = tiny_config(tmp_path / "cfg.yaml", descriptor(tmp_path), tmp_path / "runs")
    train, evaluate, detect = load_tool("train"), load_tool("eval"), load_tool("detect")
    capsys.readouterr()

    assert train.main(["--resume", str(path), "--no-progress"]) == 1
    _refused(capsys.readouterr().err, path)
    assert train.main([str(cfg), "--resume", str(path), "--no-progress"]) == 1
    _refused(capsys.readouterr().err, path)
    assert train.main([str(cfg), f"model.weights={path}", "--no-progress"]) == 1
    _refused(capsys.readouterr().err, path)
    pre = tmp_path / "pre.yaml"
    pre.write_text(f"pretrain:\n  data: {tmp_path}\n  device: cpu\n")
    assert load_tool("pretrain").main([str(pre), "--resume", str(path), "--no-progress"]) == 1
    _refused(capsys.readouterr().err, path)
    assert evaluate.main([str(cfg), "--weights", str(path), "--device", "cpu"]) == 2
    _refused(capsys.readouterr().err, path)
    image = tmp_path / "x.jpg"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    assert detect.main([str(image), "--weights", str(path), "--out", str(tmp_path / "det")]) == 2
    _refused(capsys.readouterr().err, path)
    from cspdet.runtime.predictor import Predictor

    with pytest.raises(CheckpointError, match="refused: .* could run code"):
        Predictor.from_checkpoint(path)
    assert not marker.exists()  # the payload never ran
