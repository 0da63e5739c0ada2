"""cspdet.runtime.checkpoint: atomic saves and weights-only loads with clear errors."""

from __future__ import annotations

import pytest
import torch

from cspdet.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


class Payload:
    """Stands for code smuggled into a checkpoint."""


def ckpt(value: float) -> dict:
    return {"format": "cspdet", "kind": "detector", "version": 1, "model": {"w": torch.full((3,), value)}}


def test_round_trip(tmp_path):
    path = save_checkpoint(ckpt(1.0), tmp_path / "sub" / "last.pt")
    loaded = load_checkpoint(path, kind="detector")
    assert torch.equal(loaded["model"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp files left behind


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(ckpt(1.0), tmp_path / "last.pt")

    def explode(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(ckpt(2.0), path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_foreign_and_unsafe_files_get_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a cspdet checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint file"):
        load_checkpoint(tmp_path / "garbage.pt")
    good = save_checkpoint(ckpt(1.0), tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="cannot read the checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt")

    # An arbitrary importable object: weights-only loading must refuse to unpickle it.
    torch.save({"format": "cspdet", "obj": Payload()}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="refused: .* could run code"):
        load_checkpoint(tmp_path / "code.pt")


def test_kind_mismatch(tmp_path):
    path = save_checkpoint(ckpt(1.0), tmp_path / "det.pt")
    with pytest.raises(CheckpointError, match="expected a classifier checkpoint"):
        load_checkpoint(path, kind="classifier")
