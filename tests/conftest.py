"""Shared fixtures. The real COCO-format sample lives beside the checkout in ../shared/data/coco128."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Callable

import pytest
import torch

import reference_guard  # tests/reference_guard.py: the reference packages CI promises

REPO_ROOT = Path(__file__).resolve().parents[1]
COCO128 = Path(os.environ.get("CSPDET_COCO128", REPO_ROOT.parent / "shared" / "data" / "coco128"))

# One intra-op thread per test process: ``make test`` runs one pytest worker per core (below), and the cores are
# shared with the data-loader workers and subprocesses some tests start; an OpenMP pool wider than its share spins.
torch.set_num_threads(1)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent without xdist
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``pytest -n auto``: one worker per core this process may use (its CPU affinity, as the trainer counts
    cores). xdist's own count (physical cores with psutil, else ``os.cpu_count()``) does not see a container's or
    a ``taskset``'s narrower affinity and would oversubscribe it."""
    from cspdet.engine.resources import available_cores

    return available_cores()


def pytest_configure(config: pytest.Config) -> None:
    if reference_guard.REQUIRE_REFERENCES:
        config.pluginmanager.register(reference_guard.RequireReferences(), "cspdet-require-references")


def pytest_sessionstart(session: pytest.Session) -> None:
    reference_guard.stop_if_missing()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def coco128_root() -> Path:
    """Root of the real coco128 sample; skips the test when ../shared/data/coco128 is absent."""
    if not (COCO128 / "annotations" / "instances_val.json").is_file():
        pytest.skip(f"real COCO sample not found at {COCO128} (set CSPDET_COCO128 or provide ../shared)")
    return COCO128


@pytest.fixture(scope="session")
def coco128_val_subset(coco128_root, tmp_path_factory) -> Callable[[int], Path]:
    """``coco128_val_subset(n)`` -> dataset descriptor YAML of the first ``n`` coco128 val images (real photos,
    80 COCO categories); its ground truth is ``val.json`` beside the descriptor."""

    def make(n: int) -> Path:
        data = json.loads((coco128_root / "annotations" / "instances_val.json").read_text())
        keep = {im["id"] for im in data["images"][:n]}
        data["images"] = [im for im in data["images"] if im["id"] in keep]
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        root = tmp_path_factory.mktemp(f"coco128_val_{n}")
        (root / "val.json").write_text(json.dumps(data))
        desc = root / "subset.yaml"
        desc.write_text(f"format: coco\npath: {root}\nval:\n  images: {coco128_root / 'images' / 'val'}\n"
                        f"  annotations: {root / 'val.json'}\n")
        return desc

    return make


# ------------------------------------------------------------------------------------ faults of the machine


class _FullFile:
    """A file on a disk with ``room`` bytes left: the write that crosses it stores what fits and raises ENOSPC,
    as a real full disk does."""

    def __init__(self, fh, room: list[int]):
        self._fh, self._room = fh, room

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self._room[0]:
            self._fh.write(data[: self._room[0]])
            self._room[0] = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room[0] -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)


@pytest.fixture
def disk_full(monkeypatch):
    """``disk_full(room, only=None)``: from now on, atomic writes (of files named ``only``, if given) find
    ``room`` bytes free on the disk; ``disk_full.free()`` makes space again."""
    from cspdet import fileio

    real_init = fileio._Writer.__init__

    def activate(room: int = 0, only: str | None = None):
        budget = [room]

        def init(self, fh, name):
            hit = only is None or Path(name).name.startswith(f".{only}.")
            real_init(self, _FullFile(fh, budget) if hit else fh, name)

        monkeypatch.setattr(fileio._Writer, "__init__", init)

    activate.free = lambda: monkeypatch.setattr(fileio._Writer, "__init__", real_init)
    return activate


@pytest.fixture
def small_tmpfs(tmp_path):
    """``small_tmpfs(size)`` -> a directory on a freshly mounted tmpfs of ``size`` (e.g. "32m"), unmounted
    after the test; skips when this machine does not allow mounting (not root, in a container without
    CAP_SYS_ADMIN, ...)."""
    import subprocess

    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
        mounted.append(where)
        return where

    mount.read_only = _remount_read_only
    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _remount_read_only(where: Path) -> None:
    import subprocess

    proc = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {proc.stderr.strip()}")


@pytest.fixture(scope="session")
def shapes_descriptor(tmp_path_factory) -> Path:
    """Descriptor YAML of a tiny synthetic COCO-layout dataset cspdet draws itself: 3 classes, 8 train and 4 val
    images of 64 px (seed 0). Read-only for the tests that share it."""
    from cspdet.data.synthetic import make_shapes_dataset

    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root / "shapes", num_train=8, num_val=4, size=64, seed=0)
    desc = root / "shapes.yaml"
    desc.write_text(f"format: coco\npath: {root / 'shapes'}\n"
                    "train: {images: images/train, annotations: annotations/instances_train.json}\n"
                    "val: {images: images/val, annotations: annotations/instances_val.json}\n")
    return desc


# ------------------------------------------------------------------------------------------------ fuzz tests


def pytest_report_header(config: pytest.Config) -> str:
    """The fuzz tests' seed and case count (tests/fuzzing.py), so that any run can be replayed."""
    from fuzzing import FUZZ_CASES, FUZZ_SEED

    return (f"cspdet fuzz: seed {FUZZ_SEED}, {FUZZ_CASES} cases per family set (CSPDET_FUZZ_SEED, "
            "CSPDET_FUZZ_CASES to change)")


def pytest_terminal_summary(terminalreporter) -> None:
    """The fuzz settings and, per fuzz family that ran, its cases, outcomes and time (the lines travel on the test
    reports, so they arrive from xdist workers too; shown also under ``-q``, which hides the header)."""
    from fuzzing import FUZZ_CASES, FUZZ_SEED

    lines = [value for key in ("passed", "failed") for report in terminalreporter.stats.get(key, [])
             for name, value in getattr(report, "user_properties", ()) if name == "cspdet_fuzz"]
    if not lines:
        return
    terminalreporter.section("cspdet fuzz")
    terminalreporter.write_line(f"seed {FUZZ_SEED} (CSPDET_FUZZ_SEED), {FUZZ_CASES} cases per family set "
                                "(CSPDET_FUZZ_CASES); a failure names its case seed and how to replay it")
    for line in lines:
        terminalreporter.write_line(line)
