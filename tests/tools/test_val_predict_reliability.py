"""Issue 24 at the command line: ``cspdet val`` says when the config's model section disagrees with the
checkpoint, and ``val`` / ``predict`` treat an undecodable image as every other path does (skipped, warned,
counted; never a traceback)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cspdet.data import DatasetWarning


@pytest.fixture(scope="module")
def shapes_with_a_broken_image(tmp_path_factory) -> dict:
    from cspdet.data.synthetic import make_shapes_dataset

    root = tmp_path_factory.mktemp("broken_shapes")
    make_shapes_dataset(root / "shapes", num_train=4, num_val=4, size=64, seed=0)
    val_dir = root / "shapes" / "images" / "val"
    bad = sorted(val_dir.iterdir())[1]
    bad.write_bytes(bad.read_bytes()[:200])  # a truncated JPEG
    desc = root / "shapes.yaml"
    desc.write_text(f"format: coco\npath: {root / 'shapes'}\n"
                    "train: {images: images/train, annotations: annotations/instances_train.json}\n"
                    "val: {images: images/val, annotations: annotations/instances_val.json}\n")
    return {"descriptor": desc, "bad": bad, "val_dir": val_dir, "root": root}


def _config(path: Path, descriptor: Path, model: str) -> Path:
    path.write_text(f"model: {model}\ndata: {{dataset: {descriptor}, workers: 0}}\n"
                    "eval: {img_size: [64, 64], batch_size: 4}\n")
    return path


@pytest.mark.parametrize("model, said, holds", [
    # the preset's own width (0.25), not the checkpoint's 0.125: same name and classes, another network
    ("{name: cspdarknet_nano, num_classes: 3}", "model.name='cspdarknet_nano', model.num_classes=3 (0.90 M "
     "parameters, 3 classes)", "holds an unnamed network (0.23 M parameters, 3 classes)"),
    ("{name: cspdarknet_s, num_classes: 4, width: 0.125}", "model.num_classes=4, model.width=0.125 (",
     "(0.23 M parameters, 3 classes)"),
])
def test_val_warns_once_when_the_config_model_disagrees(shapes_with_a_broken_image, shapes_weights, tmp_path,
                                                        run_tool_here, caplog, model, said, holds):
    cfg = _config(tmp_path / "cfg.yaml", shapes_with_a_broken_image["descriptor"], model)
    with caplog.at_level(logging.WARNING), pytest.warns(DatasetWarning):
        proc = run_tool_here("eval.py", cfg, "--weights", shapes_weights, "--no-plots", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    lines = [r.getMessage() for r in caplog.records if r.name == "cspdet.val"]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert str(cfg) in lines[0] and said in lines[0] and holds in lines[0]
    assert "evaluating the checkpoint's own network" in lines[0]


def test_val_is_silent_when_the_config_model_agrees(shapes_with_a_broken_image, shapes_weights, tmp_path,
                                                    run_tool_here, caplog):
    desc = shapes_with_a_broken_image["descriptor"]
    for model in ("{name: cspdarknet_nano, num_classes: 3, width: 0.125}", "{}"):
        cfg = _config(tmp_path / "cfg.yaml", desc, model)
        with caplog.at_level(logging.WARNING), pytest.warns(DatasetWarning) as caught:
            proc = run_tool_here("eval.py", cfg, "--weights", shapes_weights, "--no-plots", "--out", tmp_path / "o")
        assert proc.returncode == 0, proc.stderr
        assert not [r for r in caplog.records if r.name == "cspdet.val"]
        # the truncated val image: skipped with a warning naming it and a count, the others evaluated
        bad = str(shapes_with_a_broken_image["bad"])
        assert any(bad in str(w.message) and "truncated_image" in str(w.message) for w in caught)
        assert any("truncated_image=1" in str(w.message) for w in caught)
        assert "4 images" in proc.stdout
    # an override says it too
    with caplog.at_level(logging.WARNING), pytest.warns(DatasetWarning):
        run_tool_here("eval.py", cfg, "--weights", shapes_weights, "model.num_classes=5", "--no-plots", "--out",
                      tmp_path / "o")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "cspdet.val"]
    assert "model.num_classes=5 (" in line and "holds an unnamed network (0.23 M parameters, 3 classes)" in line


def test_predict_skips_an_undecodable_image_with_one_line_and_a_count(shapes_with_a_broken_image, shapes_weights,
                                                                      tmp_path, run_tool_here):
    proc = run_tool_here("detect.py", shapes_with_a_broken_image["val_dir"], "--weights", shapes_weights,
                         "--out", tmp_path / "pred", "--device", "cpu")
    assert proc.returncode == 1  # an item failed
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and str(shapes_with_a_broken_image["bad"]) in errors[0] and "truncated" in errors[0]
    assert "Traceback" not in proc.stderr
    assert "done: 3 images, 1 failed" in proc.stdout
