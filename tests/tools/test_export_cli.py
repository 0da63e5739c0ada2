"""tools/export.py, and exported files through tools/eval.py and tools/detect.py as a user runs them: the mAP of the
exported file equals the checkpoint's; bad files and a missing extra are one line each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install 'cspdet[export]')")

REPO = Path(__file__).resolve().parents[2]


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def exported(coco_subset, tmp_path_factory, run_tool) -> dict:
    """The coco subset's tiny checkpoint exported to ONNX (dynamic) and TorchScript by tools/export.py."""
    out = tmp_path_factory.mktemp("exported")
    files = {}
    for fmt, name, extra in (("onnx", "m.onnx", ["--dynamic"]), ("torchscript", "m.torchscript", [])):
        proc = run_tool("export.py", coco_subset["weights"], "--format", fmt, "--out", out / name, *extra)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"wrote {out / name} ({fmt}, fp32")
        files[fmt] = out / name
    return files


def test_eval_of_the_onnx_file_equals_the_checkpoint(coco_subset, exported, tmp_path, run_tool):
    """`tools/eval.py CONFIG --weights model.onnx` scores the exact deployed file: same mAP (4 decimals) as the .pt."""
    metrics = {}
    for key, weights in (("pt", coco_subset["weights"]), ("onnx", exported["onnx"])):
        proc = run_tool("eval.py", coco_subset["config"], "--weights", weights, "--out", tmp_path / key, "--no-plots")
        assert proc.returncode == 0, proc.stderr
        metrics[key] = json.loads((tmp_path / key / "metrics.json").read_text())
        dets = json.loads((tmp_path / key / "detections.json").read_text())
        metrics[key]["n_dets"] = len(dets)
    assert metrics["pt"]["n_dets"] > 100  # the tiny random model finds plenty of boxes
    assert abs(metrics["pt"]["n_dets"] - metrics["onnx"]["n_dets"]) <= metrics["pt"]["n_dets"] // 100
    for key in ("AP", "AP50", "AP75", "AR100"):
        assert round(metrics["pt"][key], 4) == round(metrics["onnx"][key], 4), key


def test_detect_runs_an_exported_file(coco_subset, exported, coco128_root, tmp_path, run_tool):
    image = min((coco128_root / "images" / "val").iterdir())
    proc = run_tool("detect.py", image, "--weights", exported["torchscript"], "--out", tmp_path, "--save-json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / f"{image.stem}.json").read_text())
    gt = json.loads(coco_subset["gt"].read_text())
    cats = {c["id"]: c["name"] for c in gt["categories"]}
    assert result["detections"]
    for d in result["detections"]:  # names and dataset ids from the file's own metadata
        assert cats[d["category_id"]] == d["class_name"]


def test_bad_exported_files_are_one_line(coco_subset, exported, tmp_path, run_tool, run_tool_here):
    import onnx
    from onnx import TensorProto, helper

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exported["onnx"].read_bytes()[:5000])
    corrupt = tmp_path / "corrupt.torchscript"
    corrupt.write_bytes(b"not a zip archive at all" * 10)
    # an ONNX model of another family: valid, runs, but carries no cspdet metadata
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "other",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 64, 64])])
    other = tmp_path / "yolo_other.onnx"
    onnx.save(helper.make_model(graph), str(other))
    cases = [(truncated, "cannot load the ONNX model"), (corrupt, "cannot load the TorchScript model"),
             (other, "not a cspdet export")]
    image = min(Path(coco_subset["gt"]).parent.glob("*.json"))  # any path: the weights fail first
    # each kind once as a user runs it (a subprocess: nothing else on stderr, no traceback), the rest in process
    _one_line_error(run_tool("detect.py", image, "--weights", truncated, "--out", tmp_path / "o"), str(truncated),
                    "cannot load the ONNX model")
    for path, needle in cases:
        _one_line_error(run_tool_here("detect.py", image, "--weights", path, "--out", tmp_path / "o"), str(path),
                        needle)
        _one_line_error(run_tool_here("eval.py", coco_subset["config"], "--weights", path, "--out", tmp_path / "e"),
                        str(path), needle)
    static = tmp_path / "static96.onnx"  # exported for 96x96; the config evaluates at 128
    assert run_tool_here("export.py", coco_subset["weights"], "--img-size", "96", "--out", static).returncode == 0
    _one_line_error(run_tool("eval.py", coco_subset["config"], "--weights", static), "exported for 96x96 inputs")
    _one_line_error(run_tool_here("detect.py", image, "--weights", static, "--img-size", "128", "--out",
                                  tmp_path / "o"), "exported for 96x96 inputs")
    missing_bin = tmp_path / "lonely.xml"
    missing_bin.write_text("<?xml version='1.0'?><net/>")
    _one_line_error(run_tool_here("eval.py", coco_subset["config"], "--weights", missing_bin),
                    "lonely.bin is missing")


def test_missing_extra_is_one_line(coco_subset, exported, tmp_path):
    """Without onnxruntime installed, running an .onnx names the extra to install, in one line."""
    blocker = tmp_path / "blocked" / "onnxruntime"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('onnxruntime is blocked for this test')\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(blocker.parent), str(REPO)]))
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "eval.py"), str(coco_subset["config"]), "--weights",
                           str(exported["onnx"])], check=False, capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    _one_line_error(proc, "onnxruntime is not installed", "pip install 'cspdet[export]'")


def test_export_usage_errors_are_one_line(coco_subset, tmp_path, run_tool, run_tool_here):
    w = coco_subset["weights"]
    _one_line_error(run_tool("export.py", w, "--format", "onnx", "--nms", "--dynamic", "--out", tmp_path / "a.onnx"),
                    "--nms exports have static shapes")
    # --int8 without --data calibrates on the dataset the checkpoint records (tests/runtime/test_open_model.py); a
    # checkpoint that records none is told to give --data
    ckpt = torch.load(w, weights_only=True)
    ckpt["meta"]["dataset"] = ckpt["meta"]["dataset_path"] = None
    torch.save(ckpt, tmp_path / "no_dataset.pt")
    _one_line_error(run_tool_here("export.py", tmp_path / "no_dataset.pt", "--format", "openvino", "--int8", "--out",
                                  tmp_path / "a.xml"), "--int8 needs --data CONFIG", "it records no dataset")
    _one_line_error(run_tool_here("export.py", w, "--img-size", "100", "--out", tmp_path / "a.onnx"), "multiples of")
    _one_line_error(run_tool_here("export.py", tmp_path / "missing.pt"), "missing.pt")
