"""cspdet.fileio: atomic writes of every file a run rewrites, and faults of the machine as one-line errors.

Faults are injected at the write itself (``disk_full``: the write that crosses the free space stores what
fits and raises ENOSPC, as a full disk does) and, where this machine allows mounting, met for real on a
tiny tmpfs (``small_tmpfs``; skipped otherwise).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cspdet import fileio
from cspdet.config import Config, load_config, save_config
from cspdet.runtime.checkpoint import load_checkpoint, save_checkpoint
from cspdet.fileio import OutputError, atomic_write, make_dirs


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_atomic_write_bytes_text_and_callable(tmp_path):
    assert atomic_write(tmp_path / "a" / "b.txt", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    assert atomic_write(tmp_path / "a" / "c.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert atomic_write(tmp_path / "a" / "d.bin", lambda fh: fh.write(b"xyz")).read_bytes() == b"xyz"
    assert _listing(tmp_path / "a") == ["b.txt", "c.bin", "d.bin"]  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a" / "b.txt").stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would


@pytest.mark.parametrize("existed", [True, False])
def test_disk_full_at_the_write_keeps_the_previous_file(tmp_path, disk_full, existed):
    path = tmp_path / "results.csv"
    if existed:
        path.write_text("epoch,loss\n1,0.5\n")
    disk_full(room=4)
    with pytest.raises(OutputError) as err:
        atomic_write(path, "epoch,loss\n1,0.5\n2,0.4\n")
    tail = "the previous results.csv is intact" if existed else "no partial file was left"
    assert str(err.value) == f"disk full while saving {path}; {tail}"
    assert err.value.errno == errno.ENOSPC and err.value.path == str(path)
    assert _listing(tmp_path) == (["results.csv"] if existed else [])
    if existed:
        assert path.read_text() == "epoch,loss\n1,0.5\n"
    disk_full.free()
    atomic_write(path, "epoch\n")  # space freed: the next write works
    assert path.read_text() == "epoch\n"


def test_disk_full_inside_torch_save_is_named_not_a_torch_runtime_error(tmp_path, disk_full):
    """torch.save reports a failed write as its own RuntimeError ("unexpected pos ..."): the errno is kept."""
    path = save_checkpoint({"format": "cspdet", "w": torch.ones(3)}, tmp_path / "last.pt")
    disk_full(room=100)
    with pytest.raises(OutputError, match=rf"^disk full while saving {path}; the previous last.pt is intact$"):
        save_checkpoint({"format": "cspdet", "w": torch.zeros(10_000)}, path)
    assert _listing(tmp_path) == ["last.pt"]
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))


def test_other_errors_still_clean_up_and_propagate(tmp_path):
    path = atomic_write(tmp_path / "x.json", "{}")

    def boom(fh):
        fh.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, boom)
    with pytest.raises(ValueError, match="not mine"):
        atomic_write(path, lambda fh: (_ for _ in ()).throw(ValueError("not mine")))
    assert _listing(tmp_path) == ["x.json"] and path.read_text() == "{}"


def test_read_only_and_permission_errors_name_the_path(tmp_path, monkeypatch):
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(OutputError, match=rf"^cannot write {tmp_path / 'runs' / 'x'}: read-only file system$"):
        make_dirs(tmp_path / "runs" / "x")
    monkeypatch.setattr(Path, "mkdir", real_mkdir)
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="a file of that name is in the way"):
        make_dirs(tmp_path / "file")

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fileio.tempfile, "mkstemp", denied)
    with pytest.raises(OutputError, match=rf"^cannot write {tmp_path / 'm.json'}: permission denied$"):
        atomic_write(tmp_path / "m.json", "{}")


def test_run_files_are_written_through_the_atomic_helper(tmp_path, disk_full):
    """config.yaml, metrics.json and the PR curves: a full disk leaves the previous file, and no temp file."""
    from pycocotools.coco import COCO

    from cspdet.engine.evaluator import coco_evaluate
    from cspdet.engine.plots import plot_pr_curve

    cfg = Config()
    save_config(cfg, tmp_path / "config.yaml")
    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "width": 64, "height": 64}], "categories": [{"id": 1, "name": "a"}],
                  "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400,
                                   "iscrowd": 0}]}
    gt.createIndex()
    metrics = coco_evaluate(gt, [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "score": 0.9}])
    metrics.save_json(tmp_path / "metrics.json")
    plot_pr_curve(metrics, tmp_path / "pr_curve.png")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert before["pr_curve.png"].startswith(b"\x89PNG")
    disk_full(room=10)
    cfg.train.epochs = 7
    for write, name in [(lambda: save_config(cfg, tmp_path / "config.yaml"), "config.yaml"),
                        (lambda: metrics.save_json(tmp_path / "metrics.json"), "metrics.json"),
                        (lambda: plot_pr_curve(metrics, tmp_path / "pr_curve.png"), "pr_curve.png")]:
        with pytest.raises(OutputError, match=rf"disk full while saving .*{name}; the previous {name} is intact"):
            write()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert load_config(tmp_path / "config.yaml").train.epochs == 300
    assert json.loads(before["metrics.json"])["AP"] == pytest.approx(1.0)


def test_real_full_and_read_only_tmpfs(small_tmpfs):
    """The same on a real 1 MB tmpfs: torch.save running out of space, then a read-only remount."""
    disk = small_tmpfs("1m")
    path = save_checkpoint({"format": "cspdet", "w": torch.ones(1000)}, disk / "run" / "last.pt")
    with pytest.raises(OutputError, match=rf"^disk full while saving {path}; the previous last.pt is intact$"):
        save_checkpoint({"format": "cspdet", "w": torch.from_numpy(np.zeros(400_000, np.float32))}, path)
    assert _listing(disk / "run") == ["last.pt"]
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(1000))
    small_tmpfs.read_only(disk)
    with pytest.raises(OutputError, match=rf"^cannot write {disk / 'other'}: read-only file system$"):
        atomic_write(disk / "other" / "config.yaml", "a: 1\n")
    with pytest.raises(OutputError, match=rf"^cannot write {path}: read-only file system; the previous last.pt"):
        save_checkpoint({"format": "cspdet"}, path)
