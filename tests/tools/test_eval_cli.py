"""tools/eval.py in both modes: a checkpoint on a config's val set, and a detections file against COCO GT."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def _pycocotools_stats(gt_path, dets) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(dets))), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def _one_error_line(proc) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small COCO GT (with a crowd region and a background image) and detections for it."""
    d = tmp_path_factory.mktemp("files")
    gt = {
        "images": [{"id": i, "width": 320, "height": 240, "file_name": f"{i}.jpg"} for i in (1, 2, 3)],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 7, "name": "train"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 100], "area": 5000, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [100, 120, 120, 60], "area": 7200, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 200, 200], "area": 40000, "iscrowd": 1},
            {"id": 4, "image_id": 2, "category_id": 3, "bbox": [250, 30, 20, 20], "area": 400, "iscrowd": 0},
        ],
    }
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [12, 11, 48, 98], "score": 0.9},
        {"image_id": 1, "category_id": 3, "bbox": [90, 125, 120, 60], "score": 0.6},
        {"image_id": 2, "category_id": 1, "bbox": [20, 20, 40, 40], "score": 0.8},
        {"image_id": 2, "category_id": 3, "bbox": [251, 29, 20, 22], "score": 0.3},
        {"image_id": 3, "category_id": 7, "bbox": [5, 5, 30, 30], "score": 0.5},
    ]
    (d / "gt.json").write_text(json.dumps(gt))
    (d / "dets.json").write_text(json.dumps(dets))
    return d, dets


def test_file_mode_equals_pycocotools(files, run_tool):
    d, dets = files
    proc = run_tool("eval.py", "--ann", d / "gt.json", "--results", d / "dets.json", "--out", d / "out")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Average Precision") == 6 and proc.stdout.count("Average Recall") == 6
    assert "person" in proc.stdout and "car" in proc.stdout
    metrics = json.loads((d / "out" / "metrics.json").read_text())
    assert [k for k in metrics if k in KEYS] == KEYS
    assert [metrics[k] for k in KEYS] == pytest.approx(_pycocotools_stats(d / "gt.json", dets), abs=1e-12)
    for name in ("pr_curve.png", "f1_curve.png", "p_curve.png", "r_curve.png", "confusion_matrix.png",
                 "confusion_matrix_normalized.png"):
        assert (d / "out" / name).stat().st_size > 1000, name
    train = [c for c in metrics["per_class"] if c["name"] == "train"][0]
    assert train["AP"] is None and train["num_det"] == 1  # detections for a class without GT


def test_file_mode_errors_name_the_mismatched_ids(files, tmp_path, run_tool):
    d, dets = files
    (tmp_path / "bad_img.json").write_text(json.dumps(dets + [dict(dets[0], image_id=42)]))
    line = _one_error_line(run_tool("eval.py", "--ann", d / "gt.json", "--results", tmp_path / "bad_img.json"))
    assert "bad_img.json" in line and "image ids that are not in" in line and "42" in line and "gt.json" in line
    (tmp_path / "bad_cat.json").write_text(json.dumps(dets + [dict(dets[0], category_id=2)]))
    line = _one_error_line(run_tool("eval.py", "--ann", d / "gt.json", "--results", tmp_path / "bad_cat.json"))
    assert "category ids that are not in" in line and ": 2 " in line
    line = _one_error_line(run_tool("eval.py", "--ann", tmp_path / "none.json", "--results", d / "dets.json"))
    assert "none.json: ground truth file not found" in line
    line = _one_error_line(run_tool("eval.py", "--ann", d / "gt.json"))
    assert "needs both --ann" in line


def test_checkpoint_mode(coco_subset, tmp_path, run_tool):
    out = tmp_path / "eval"
    proc = run_tool("eval.py", coco_subset["config"], "--weights", coco_subset["weights"], "--out", out,
                    "eval.max_det=30", "eval.batch_size=3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Average Precision") == 6 and "ms/image" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    dets = json.loads((out / "detections.json").read_text())
    assert 0 < len(dets) <= 8 * 30 and metrics["meta"]["max_det"] == 30
    assert (out / "pr_curve.png").is_file() and (out / "confusion_matrix.png").is_file()
    # the written detections score the same through the file mode and through pycocotools directly
    assert [metrics[k] for k in KEYS] == pytest.approx(_pycocotools_stats(coco_subset["gt"], dets), abs=1e-12)
    again = run_tool("eval.py", "--ann", coco_subset["gt"], "--results", out / "detections.json",
                     "--out", tmp_path / "again", "--no-plots")
    assert again.returncode == 0, again.stderr
    rescored = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert not (tmp_path / "again" / "pr_curve.png").exists()
    assert [rescored[k] for k in KEYS] == [metrics[k] for k in KEYS]


def test_fast_path_scores_the_same(coco_subset, tmp_path, run_tool):
    """--channels-last (fused, channels_last PyTorch CPU path) gives the plain checkpoint's detections and mAP
    (4 decimals)."""
    runs, dets = {}, {}
    for name, extra in (("plain", ()), ("fast", ("--channels-last", "--precision", "fp32"))):
        proc = run_tool("eval.py", coco_subset["config"], "--weights", coco_subset["weights"], "--out",
                        tmp_path / name, "--no-plots", "eval.max_det=30", *extra)
        assert proc.returncode == 0, proc.stderr
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        dets[name] = sorted(d["score"] for d in json.loads((tmp_path / name / "detections.json").read_text()))
    assert len(dets["plain"]) > 100  # the tiny random model finds plenty of boxes
    assert abs(len(dets["plain"]) - len(dets["fast"])) <= len(dets["plain"]) // 100
    assert dets["fast"][-100:] == pytest.approx(dets["plain"][-100:], abs=1e-4)
    assert [round(runs["fast"][k], 4) for k in KEYS] == [round(runs["plain"][k], 4) for k in KEYS]


def test_checkpoint_mode_errors(coco_subset, shapes_weights, tmp_path, run_tool, run_tool_here):
    line = _one_error_line(run_tool("eval.py", coco_subset["config"], "--weights", shapes_weights))
    assert "model has 3 classes but the evaluation dataset has 80" in line
    # the first as a user runs it; the rest in this process (the same main(), without a subprocess' imports)
    line = _one_error_line(run_tool_here("eval.py", coco_subset["config"]))
    assert "no checkpoint: give WEIGHTS" in line
    proc = run_tool_here("eval.py", coco_subset["config"], "--weights", coco_subset["weights"], "--pre-nms-topk", "0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # argparse: usage, then the one error line
    assert proc.stderr.strip().splitlines()[-1] == ("cspdet val: error: argument --pre-nms-topk: value 0 out of range "
                                                    "[1, inf)")
    line = _one_error_line(run_tool_here("eval.py", coco_subset["config"], "--weights", coco_subset["weights"],
                                         "eval.batchsize=2"))
    assert "eval.batchsize: unknown key" in line and "did you mean eval.batch_size" in line


def test_bad_ground_truth_and_unwritable_out_are_one_line(files, tmp_path, run_tool):
    d, _ = files
    gt = json.loads((d / "gt.json").read_text())
    gt["annotations"] = [1, "two"]  # used to end in an AttributeError traceback inside the scoring
    (tmp_path / "gt_numbers.json").write_text(json.dumps(gt))
    line = _one_error_line(run_tool("eval.py", "--ann", tmp_path / "gt_numbers.json", "--results", d / "dets.json"))
    assert line == (f"cspdet val: error: {tmp_path / 'gt_numbers.json'} annotations[0]: annotation is not an object: 1 "
                    "[bad_box] (and 1 more problem)")
    # an --out that cannot be written: one line naming it, exit 1, nothing half-written
    (tmp_path / "blocker").write_text("a file, not a folder")
    proc = run_tool("eval.py", "--ann", d / "gt.json", "--results", d / "dets.json", "--out", tmp_path / "blocker")
    assert proc.returncode == 1
    assert _one_error_line(proc) == (f"cspdet val: error: cannot write {tmp_path / 'blocker'}: a file of that name "
                                     "is in the way")
