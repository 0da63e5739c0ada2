"""Fixtures for the CLI tests: run a tool as a user would, tiny real checkpoints, a coco128 subset."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tool_checkpoints import make_checkpoint  # noqa: F401  (tests/tools/tool_checkpoints.py)


REPO = Path(__file__).resolve().parents[2]


def _run_tool(tool: str, *args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python tools/<tool> args...`` from the repo root (or ``cwd``), with a plain one-thread environment."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *map(str, args)], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def run_tool():
    """``run_tool("detect.py", *args)`` -> CompletedProcess of ``python tools/detect.py args`` from the repo root."""
    return _run_tool


@pytest.fixture
def run_tool_here(tmp_path, monkeypatch):
    """``run_tool_here("eval.py", *args)``: ``run_tool`` in this process, from ``tmp_path``.

    The same ``main()`` the tool's script calls, with stdout / stderr captured into a CompletedProcess (exit code
    from ``main``'s return or argparse's SystemExit; an exception that escapes ``main`` fails the test, as its
    traceback would in a subprocess). For the many error cases of one test, where a subprocess per case spends
    seconds importing torch and the runtimes. Not seen here: messages of ``logging`` (pytest owns the root logger),
    so each error kind keeps at least one real ``run_tool`` case.
    """
    import runpy

    monkeypatch.chdir(tmp_path)

    def run(tool: str, *args: str) -> subprocess.CompletedProcess:
        main = runpy.run_path(str(REPO / "tools" / tool))["main"]  # the script's own main (a cspdet.cli alias)
        argv = list(map(str, args))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit_:  # argparse: usage errors
                code = exit_.code if isinstance(exit_.code, int) else 1
        return subprocess.CompletedProcess([tool, *argv], code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture(scope="session")
def shapes_weights(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("w") / "shapes.pt", 3, ["circle", "square", "triangle"], [1, 2, 3])


@pytest.fixture(scope="session")
def coco_subset(coco128_val_subset) -> dict:
    """Descriptor + GT json of the first 8 coco128 val images, and a matching 80-class tiny checkpoint."""
    desc = coco128_val_subset(8)
    root = desc.parent
    data = json.loads((root / "val.json").read_text())
    cats = sorted(c["id"] for c in data["categories"])
    names = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    weights = make_checkpoint(root / "coco_tiny.pt", 80, names, cats, dataset=str(desc))
    config = root / "eval.yaml"
    config.write_text(f"model:\n  name: cspdarknet_nano\n  num_classes: 80\n  width: 0.125\n"
                      f"data:\n  dataset: {desc}\n  workers: 0\neval:\n  img_size: [128, 128]\n  batch_size: 4\n")
    return {"descriptor": desc, "gt": root / "val.json", "weights": weights, "config": config, "root": root}
