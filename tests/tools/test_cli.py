"""The ``cspdet`` command: subcommands and their ``--help``, overrides in any position, ``val`` from the checkpoint
alone with numbered output folders, ``auto`` devices, and the README's Quickstart run as written."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from tool_checkpoints import make_checkpoint  # tests/tools/tool_checkpoints.py
from test_train_cli import descriptor, tiny_config  # tests/tools/test_train_cli.py

from cspdet.cli import COMMANDS, main
from cspdet.cli.args import split_overrides

REPO = Path(__file__).resolve().parents[2]


def cspdet(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``cspdet ARGS`` as ``python -m cspdet.cli ARGS`` (the console script's target) in ``cwd``, importing this
    checkout's cspdet."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-m", "cspdet.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------------- the command itself


def test_overrides_are_found_in_any_position():
    rest, overrides = split_overrides(
        ["--no-progress", "model.name=cspdarknet_nano", "configs/x.yaml", "--resume", "eval.batch_size=4",
         "epochs=3", "img_size=[64,64]", "runs/a=b/best.pt", "unknown_key=1", "--out", "x", "--", "data.x=1"],
        ("train", "model", "data", "eval"))
    assert overrides == ["model.name=cspdarknet_nano", "eval.batch_size=4", "train.epochs=3", "data.img_size=[64,64]"]
    assert rest == ["--no-progress", "configs/x.yaml", "--resume", "runs/a=b/best.pt", "unknown_key=1", "--out", "x",
                    "--", "data.x=1"]
    # bare keys take the first of the command's sections that has them: val looks in eval first
    assert split_overrides(["batch_size=2", "workers=0"], ("eval", "data", "model", "train"))[1] == [
        "eval.batch_size=2", "data.workers=0"]
    assert split_overrides(["epochs=3"])[1] == []  # a command without a config takes no bare keys


def test_every_command_has_help_with_examples(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: cspdet {command}")
        examples = out.split("\nexamples:\n", 1)[1]
        assert f"  cspdet {command} " in examples, command
    proc = cspdet("--help", cwd=REPO)
    assert proc.returncode == 0 and all(f"  {c} " in proc.stdout for c in COMMANDS)
    proc = cspdet("trian", "configs/demo.yaml", cwd=REPO)
    assert proc.returncode == 2
    assert _one_line(proc.stderr) == "cspdet: error: unknown command 'trian'; did you mean train?"


def test_console_script_is_declared():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"cspdet": "cspdet.cli:main"}


def test_train_takes_overrides_anywhere_and_resume_never_reads_one_as_a_path(tmp_path, monkeypatch, capsys):
    """``CONFIG --no-progress model.x=...`` used to reject every override, and ``--resume eval.batch_size=4``
    took the override for the checkpoint path."""
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tmp_path / "tiny.yaml", descriptor(tmp_path), Path("runs/train"), epochs=2)
    assert main(["train", str(cfg), "--no-progress", "model.width=0.0625", "epochs=1"]) == 0
    run = tmp_path / "runs" / "train" / "cli"
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["model"]["width"] == 0.0625 and stored["train"]["epochs"] == 1
    capsys.readouterr()
    assert main(["train", "--resume", "eval.batch_size=2", "--no-progress"]) == 0  # the newest run, an override
    assert "already finished all 1 epochs" in capsys.readouterr().err
    # overrides before the config, the config last
    assert main(["train", "train.name=second", "--no-progress", "model.width=0.0625", "epochs=1", str(cfg)]) == 0
    assert (tmp_path / "runs" / "train" / "second" / "best.pt").is_file()
    # the same through the tools/ alias, in a child process as a user runs it
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), "--resume", "eval.batch_size=2",
                           "runs/train/second"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert proc.returncode == 0 and "already finished" in proc.stderr and "second" in proc.stderr


# ----------------------------------------------------------------------------------------------------- val


def test_val_uses_the_checkpoint_dataset_and_numbers_its_folders(coco_subset, coco128_val_subset, tmp_path,
                                                                  monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    weights = coco_subset["weights"]  # records its dataset (8 coco128 val images) and img_size 128
    assert main(["val", str(weights), "workers=0", "batch_size=4"]) == 0  # bare keys: data.workers, eval.batch_size
    out = capsys.readouterr().out
    assert f"on {coco_subset['descriptor']} (val, 8 images) at 128x128" in out
    first = json.loads((tmp_path / "runs" / "val" / "coco_tiny" / "metrics.json").read_text())
    # any order; a second evaluation of the same checkpoint gets its own folder
    assert main(["val", "--no-plots", "data.workers=0", str(weights)]) == 0
    second_dir = tmp_path / "runs" / "val" / "coco_tiny-2"
    assert json.loads((second_dir / "metrics.json").read_text())["AP"] == first["AP"]
    assert not (second_dir / "pr_curve.png").exists() and (second_dir / "detections.json").is_file()
    # another dataset: an override, with --out a folder
    other = coco128_val_subset(4)
    assert main(["val", str(weights), f"data.dataset={other}", "data.workers=0", "--out", "v4"]) == 0
    assert "(val, 4 images)" in capsys.readouterr().out and (tmp_path / "v4" / "metrics.json").is_file()
    # a CONFIG positional, in any order, still means the config's data and eval settings
    assert main(["val", "eval.max_det=10", str(weights), str(coco_subset["config"]), "--out", "c"]) == 0
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["meta"]["max_det"] == 10
    # a best.pt is named after its run
    run = tmp_path / "runs" / "train" / "exp7"
    run.mkdir(parents=True)
    shutil.copy(weights, run / "best.pt")
    assert main(["val", str(run / "best.pt"), "data.workers=0", "--no-plots"]) == 0
    assert (tmp_path / "runs" / "val" / "exp7" / "metrics.json").is_file()


def test_val_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    names = ["circle", "square", "triangle"]
    unknown = make_checkpoint(tmp_path / "unknown.pt", 3, names, [1, 2, 3])
    assert main(["val", str(unknown)]) == 2
    assert _one_line(capsys.readouterr().err) == (f"cspdet val: error: {unknown}: the checkpoint does not record the "
                                                  "dataset it was trained on; give one: data.dataset=DESCRIPTOR.yaml "
                                                  "(or a CONFIG)")
    moved = make_checkpoint(tmp_path / "moved.pt", 3, names, [1, 2, 3], dataset="datasets/gone.yaml")
    assert main(["val", str(moved)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "its dataset datasets/gone.yaml is not found (relative to where it was trained)" in line
    assert main(["val", str(moved), "--out", "metrics.json"]) == 2
    assert "--out is a folder" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()  # nothing half-made


# ------------------------------------------------------------------------------------------------ predict


def test_predict_defaults_to_auto_and_numbers_its_folders(shapes_weights, tmp_path, monkeypatch, capsys):
    import inspect

    from cspdet import Predictor
    from cspdet.cli.predict import parse_args
    from cspdet.engine.distributed import select_device

    assert parse_args(["a.jpg", "-w", "w.pt"]).device == "auto"
    assert parse_args(["a.jpg", "-w", "w.pt"]).rect and not parse_args(["a.jpg", "-w", "w.pt", "--no-rect"]).rect
    assert not Predictor.from_checkpoint(shapes_weights, rect=False).rect
    assert inspect.signature(Predictor.from_checkpoint).parameters["device"].default == "auto"
    assert Predictor.from_checkpoint(shapes_weights).device == select_device("auto")
    monkeypatch.chdir(tmp_path)
    cv2.imwrite("x.jpg", np.full((64, 64, 3), 90, np.uint8))
    for _ in range(2):
        assert main(["predict", "--weights", str(shapes_weights), "x.jpg", "--save-json"]) == 0
    assert (tmp_path / "runs" / "predict" / "shapes" / "x.json").is_file()
    assert (tmp_path / "runs" / "predict" / "shapes-2" / "x.jpg").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "x.jpg", "-w", str(shapes_weights), "eval.conf=0.3"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "cspdet predict: error: eval.conf=0.3: predict takes options, not config overrides (e.g. --conf 0.3; "
        "see --help)")


# ------------------------------------------------------------------------------------ README's Quickstart

TINY_TRAIN = ["model.name=cspdarknet_nano", "model.width=0.125", "model.num_classes=3",
              "data.dataset=datasets/shapes.yaml", "data.img_size=64", "eval.img_size=64", "data.workers=0",
              "data.multiscale_range=0", "train.epochs=1", "train.batch_size=4", "train.warmup_epochs=1",
              "train.no_aug_epochs=0", "train.eval_interval=1", "train.device=cpu", "train.log_images=0",
              "eval.batch_size=4"]


def quickstart_commands() -> list[list[str]]:
    """The ``cspdet`` lines of the README's Quickstart block, as argument lists (comments dropped)."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"^## Quickstart\n.*?```bash\n(.*?)```", text, re.DOTALL | re.MULTILINE)
    assert block, "README.md has no Quickstart bash block"
    return [shlex.split(line, comments=True)[1:] for line in block[1].splitlines() if line.startswith("cspdet ")]


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                image = np.clip(rng.normal(colour, 30, (36, 36, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{i}.jpg"), image)
    return root


def test_readme_quickstart_runs_as_written(tmp_path, monkeypatch):
    """Every ``cspdet`` command of the README's Quickstart, in order, in a fresh copy of the repository's configs
    and dataset descriptors (with the small shapes dataset ``make demo`` would write), with tiny settings
    appended; then the commands that name an input first once more with that input moved to the end."""
    from cspdet.data.synthetic import make_shapes_dataset

    shutil.copytree(REPO / "configs", tmp_path / "configs")
    (tmp_path / "datasets").mkdir()
    for desc in (REPO / "datasets").glob("*.yaml"):
        shutil.copy(desc, tmp_path / "datasets")
    make_shapes_dataset(tmp_path / "datasets" / "shapes", num_train=8, num_val=4, size=64)
    imagenet = _image_folder(tmp_path / "imagefolder")
    tiny_pretrain = [f"pretrain.data={imagenet}", "pretrain.model=custom", "pretrain.stem_channels=8",
                     "pretrain.stage_defs=[[1,8,darknet,true],[1,16,resnet,true]]", "pretrain.img_size=32",
                     "pretrain.epochs=1", "pretrain.batch_size=4", "pretrain.workers=0", "pretrain.device=cpu"]
    commands = quickstart_commands()
    assert {c[0] for c in commands} == {"train", "val", "predict", "check", "convert", "pretrain"}
    again = []
    for args in commands:
        command, rest = args[0], args[1:]
        if command == "train" and "--resume" not in rest:
            rest = rest + TINY_TRAIN
        elif command == "pretrain":
            rest = rest + tiny_pretrain
        elif command == "val" and "--ann" not in rest:
            rest = rest + ["data.workers=0"]
        proc = cspdet(command, *rest, cwd=tmp_path)
        assert proc.returncode == 0, f"cspdet {shlex.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        if command in ("val", "predict", "check", "convert") and not rest[0].startswith("-"):
            again.append([command, *rest[1:], rest[0]])
    runs = tmp_path / "runs"
    assert (runs / "demo" / "shapes" / "best.pt").is_file()
    assert (runs / "train" / "cspdarknet_s_coco" / "best.pt").is_file()
    assert (runs / "val" / "shapes" / "metrics.json").is_file()
    assert (runs / "val" / "shapes_train" / "metrics.json").is_file()
    assert (runs / "val" / "detections" / "metrics.json").is_file()  # the file mode scored val's detections
    assert (runs / "predict" / "shapes" / "000001.json").is_file()
    assert yaml.safe_load((tmp_path / "datasets" / "shapes_yolo" / "dataset.yaml").read_text())["path"] == str(
        (tmp_path / "datasets" / "shapes_yolo").resolve())
    assert list((runs / "pretrain").glob("*/best.pt"))
    monkeypatch.chdir(tmp_path)
    for args in again:  # any argument order (in this process: the same main() the console script calls)
        assert main(args) == 0, f"cspdet {shlex.join(args)}"
    assert (runs / "val" / "shapes-2" / "metrics.json").is_file() and (runs / "predict" / "shapes-2").is_dir()
