"""tools/train.py and tools/pretrain.py as a user runs them: errors, --resume, and 2-process DDP with torchrun."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cspdet.config import config_from_dict
from cspdet.data.synthetic import make_shapes_dataset
from cspdet.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


def run_tool(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def descriptor(root: Path, duplicate_first: bool = False, num_train: int = 8) -> Path:
    """``num_train`` train / 4 val 64 px shapes images in COCO layout; ``duplicate_first`` makes all train
    images copies of the first one."""
    data = make_shapes_dataset(root / "shapes", num_train=num_train, num_val=4, size=64, seed=0)
    if duplicate_first:
        ann_path = data / "annotations" / "instances_train.json"
        ann = json.loads(ann_path.read_text())
        first = ann["images"][0]
        boxes = [a for a in ann["annotations"] if a["image_id"] == first["id"]]
        images, anns = [], []
        for i in range(num_train):
            name = f"copy{i}.jpg"
            shutil.copy(data / "images" / "train" / first["file_name"], data / "images" / "train" / name)
            images.append({**first, "id": i + 1, "file_name": name})
            anns += [{**a, "id": len(anns) + j + 1, "image_id": i + 1} for j, a in enumerate(boxes)]
        ann_path.write_text(json.dumps({**ann, "images": images, "annotations": anns}))
    path = root / "shapes.yaml"
    path.write_text(
        f"format: coco\npath: {data}\n"
        "train: {images: images/train, annotations: annotations/instances_train.json}\n"
        "val: {images: images/val, annotations: annotations/instances_val.json}\n"
    )
    return path


def tiny_config(path: Path, dataset: Path, output_dir: Path, **train) -> Path:
    raw = {
        "model": {"name": "cspdarknet_s", "num_classes": 3, "depth": 0.33, "width": 0.125},
        "data": {"dataset": str(dataset), "img_size": [64, 64], "workers": 0},
        "train": {"epochs": 1, "batch_size": 4, "warmup_epochs": 1, "no_aug_epochs": 0, "eval_interval": 1,
                  "output_dir": str(output_dir), "name": "cli", "log_images": 0, "device": "cpu", **train},
        "eval": {"img_size": [64, 64], "batch_size": 4},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_key_is_one_line_error():
    proc = run_tool("tools/train.py", "configs/cspdarknet_yolo.yaml", "model.bogus=1")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.bogus" in lines[0] and "Traceback" not in proc.stderr
    proc = run_tool("tools/pretrain.py", "configs/cspdarknet_yolo.yaml", "pretrain.bogus=1")
    assert proc.returncode != 0 and "pretrain.bogus" in proc.stderr and "Traceback" not in proc.stderr


def load_tool(name: str):
    """Import tools/<name>.py as a module, to call its ``main(argv)`` in-process (no interpreter start-up)."""
    spec = importlib.util.spec_from_file_location(f"cspdet_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_then_resume_messages(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "tiny.yaml", descriptor(tmp_path), tmp_path / "runs")
    proc = run_tool("tools/train.py", str(cfg), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "cli"
    assert "done: 1 epochs" in proc.stdout and (run / "last.pt").is_file()
    # --no-progress drops the bars, not the run header and the line per epoch
    out = proc.stdout.splitlines()
    assert out[0] == f"run       {run} (new run)" and out[4].startswith("device    cpu, 1 intra-op thread")
    assert out[4].endswith("; fp32")  # the precision closes the device line
    epoch_line = next(line for line in out if line.startswith("epoch 1/1"))
    assert " img/s " in epoch_line and "| AP " in epoch_line and "epoch 1/1:" not in proc.stderr
    capsys.readouterr()
    train = load_tool("train")
    # --resume with no path takes the newest run; a finished run says so and exits cleanly
    assert train.main([str(cfg), "--resume"]) == 0
    assert "already finished all 1 epochs" in capsys.readouterr().err
    assert train.main(["--resume", str(run)]) == 0  # the run's own config, no CONFIG needed
    err = capsys.readouterr().err
    assert "already finished" in err and str(run) in err
    # a changed config is refused with the differing key named, in one line
    assert train.main([str(cfg), "train.lr_per_image=0.1", "--resume", str(run / "last.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.lr_per_image" in err and "config differs" in err
    assert train.main([str(cfg), "--resume", str(tmp_path / "nowhere.pt")]) == 1
    assert "not found" in capsys.readouterr().err


HOLD_RUN_LOCK = r"""
import sys, time
from cspdet.engine.rundir import RunLock
lock = RunLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_writer_of_a_run_directory_is_refused_in_one_line(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "tiny.yaml", descriptor(tmp_path), tmp_path / "runs", exist_ok=True)
    run = tmp_path / "runs" / "cli"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_RUN_LOCK, str(run)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        capsys.readouterr()
        assert load_tool("train").main([str(cfg), "--no-progress"]) == 1
        line = _one_line(capsys.readouterr().err)
        assert line == (f"error: {run}: another process (pid {holder.pid}) is writing this run (it holds "
                        f"{run / '.run.lock'}); wait for it to end or stop it, or use another train.name")
    finally:
        holder.kill()
        holder.communicate()
    assert load_tool("train").main([str(cfg), "--no-progress"]) == 0  # the killed holder left no stale lock


def test_ddp_two_gloo_processes_match_single_process(tmp_path):
    """torchrun with 2 CPU processes x batch 2 == 1 process x batch 4 (2 epochs of 1 step, eval each epoch).

    All 4 training images are the same picture and augmentation is off, so each rank's batch statistics and
    per-rank loss normalisation equal the single process's and the two runs compute the same gradients up to
    float rounding. (Over many steps they would still drift apart: SimOTA's discrete assignment turns
    rounding-level differences into different matches, just as it would between two single-process runs
    with a 1e-7 perturbation; hence few steps and a relative tolerance.)
    """
    data = descriptor(tmp_path, duplicate_first=True, num_train=4)
    cfg_path = tiny_config(tmp_path / "ddp.yaml", data, tmp_path / "runs", epochs=2, warmup_epochs=1)
    raw = yaml.safe_load(cfg_path.read_text())
    raw["data"].update({"mosaic_prob": 0.0, "mixup_prob": 0.0, "hsv_prob": 0.0, "flip_prob": 0.0})
    cfg_path.write_text(yaml.safe_dump(raw))

    proc = run_tool("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "tools/train.py",
                    str(cfg_path), "train.name=ddp", "--no-progress", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done: 2 epochs") == 1  # rank 0 reports; the other rank stays quiet
    ddp = torch.load(tmp_path / "runs" / "ddp" / "last.pt", weights_only=True)
    assert ddp["trainer"]["world_size"] == 2 and len(ddp["trainer"]["rng"]) == 2
    assert ddp["trainer"]["iteration"] == 2  # 4 images / global batch 4, 2 epochs

    cfg = config_from_dict(raw)
    start = {k: v.detach().clone() for k, v in
             Trainer(cfg, run_dir=tmp_path / "runs" / "init", progress=False).model.named_parameters()}
    Trainer(cfg, run_dir=tmp_path / "runs" / "single", progress=False).fit()
    ref = torch.load(tmp_path / "runs" / "single" / "last.pt", weights_only=True)
    for part in ("raw", "ema"):
        a = ddp["trainer"]["model"] if part == "raw" else ddp["model"]
        b = ref["trainer"]["model"] if part == "raw" else ref["model"]
        delta_ddp = torch.cat([(a[k] - start[k]).flatten() for k in start])
        delta_one = torch.cat([(b[k] - start[k]).flatten() for k in start])
        rel = ((delta_ddp - delta_one).norm() / delta_one.norm()).item()
        max_abs = (delta_ddp - delta_one).abs().max().item()
        print(f"DDP vs single ({part}): relative update difference {rel:.2e}, max |dw| {max_abs:.2e}, "
              f"weights moved up to {delta_one.abs().max().item():.3g}")
        assert delta_one.abs().max().item() > 1e-3  # training changed the weights: agreement is not trivial
        assert rel < 1e-3
    assert ddp["metrics"].keys() == ref["metrics"].keys() and "AP" in ddp["metrics"]


def test_pretrain_cli(tmp_path, capsys):
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                image = np.clip(rng.normal(colour, 30, (36, 36, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{i}.jpg"), image)
    cfg = tmp_path / "pre.yaml"
    cfg.write_text(yaml.safe_dump({"pretrain": {
        "model": "custom", "stem_channels": 8, "stage_defs": [[1, 8, "darknet", True], [1, 16, "resnet", True]],
        "data": str(tmp_path / "data"), "img_size": 32, "epochs": 1, "batch_size": 4, "workers": 0,
        "device": "cpu", "output_dir": str(tmp_path / "runs"), "name": "pre"}}))
    proc = run_tool("tools/pretrain.py", str(cfg), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "best top-1" in proc.stdout and (tmp_path / "runs" / "pre" / "best.pt").is_file()
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("run       ") and lines[2].startswith("data      ") and "8 train / 8 val images" in lines[2]
    assert any(line.startswith("epoch 1/1  loss ") and " acc " in line and "| top1 " in line for line in lines)
    assert load_tool("pretrain").main([str(cfg), "--resume", str(tmp_path / "runs" / "pre")]) == 0
    assert "already finished all 1 epochs" in capsys.readouterr().err


# Runs tools/train.py in a child whose N-th torch.save writes half of the checkpoint into the temp file,
# fsyncs it, drops a marker and hangs: the parent then kill -9s the child in the middle of that save.
HANG_IN_SAVE = r"""
import io, os, runpy, sys, time
from pathlib import Path
import torch

marker, hang_on = Path(sys.argv[1]), int(sys.argv[2])
real_save, calls = torch.save, [0]

def save(obj, fh, *args, **kwargs):
    calls[0] += 1
    if calls[0] < hang_on:
        return real_save(obj, fh, *args, **kwargs)
    buf = io.BytesIO()
    real_save(obj, buf, *args, **kwargs)
    fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    fh.flush()
    os.fsync(fh.fileno())
    marker.write_text(str(obj["epoch"]))
    time.sleep(600)

torch.save = save
sys.argv = ["tools/train.py", *sys.argv[3:]]
runpy.run_path("tools/train.py", run_name="__main__")
"""


def test_kill_9_mid_save_then_resume_finishes(tmp_path, capsys):
    """A literal SIGKILL while last.pt of epoch 2 is half written: last.pt stays the epoch-1 checkpoint,
    ``--resume`` continues from it, finishes with the same weights as a run that was never interrupted, and
    cleans up the partial temp file."""
    import signal
    import time

    cfg = tiny_config(tmp_path / "kill.yaml", descriptor(tmp_path), tmp_path / "runs", epochs=3, no_aug_epochs=1,
                      eval_interval=0)  # saves: last.pt after epochs 1, 2, 3 (+ best.pt after 3)
    run = tmp_path / "runs" / "cli"
    marker = tmp_path / "saving"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    child = subprocess.Popen([sys.executable, "-c", HANG_IN_SAVE, str(marker), "2", str(cfg), "--no-progress"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), child.communicate(timeout=10)[1][-3000:] if child.poll() is not None else "timeout"
        assert marker.read_text() == "2"  # hanging inside the save of epoch 2's last.pt
        partial = list(run.glob(".last.pt.*.tmp"))
        assert len(partial) == 1 and partial[0].stat().st_size > 0
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    survivor = torch.load(run / "last.pt", weights_only=True)  # intact, not the half-written one
    assert survivor["epoch"] == 1 and survivor["trainer"]["iteration"] == 2

    capsys.readouterr()
    assert load_tool("train").main(["--resume", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"resumed {run / 'last.pt'} at epoch 1 (iteration 2)" in out and "done: 3 epochs" in out
    final = torch.load(run / "last.pt", weights_only=True)
    assert final["epoch"] == 3 and final["trainer"]["iteration"] == 6 and "AP" in final["metrics"]
    assert not list(run.glob(".*.tmp"))  # the killed save's temp file is gone
    with (run / "results.csv").open() as fh:
        assert [line.split(",")[0] for line in fh.read().splitlines()[1:]] == ["1", "2", "3"]
    # exact: the same weights (raw and EMA) as a run that was never interrupted
    from cspdet.config import load_config

    Trainer(load_config(cfg), run_dir=tmp_path / "straight", progress=False).fit()
    ref = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    for a, b in ((final["model"], ref["model"]), (final["trainer"]["model"], ref["trainer"]["model"])):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------ faults of the machine, history


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _first_epoch(tmp_path: Path, output_dir: Path) -> tuple[Path, Path]:
    """A 2-epoch tiny run stopped after epoch 1 (as if killed after that save): (config, run directory)."""
    from cspdet.config import load_config

    cfg = tiny_config(tmp_path / "run.yaml", descriptor(tmp_path), output_dir, epochs=2, no_aug_epochs=1,
                      eval_interval=0)
    Trainer(load_config(cfg), progress=False).fit(stop_after=1)
    return cfg, output_dir / "cli"


def test_disk_full_while_saving_is_one_line_and_resume_finishes(tmp_path, capsys, disk_full):
    _, run = _first_epoch(tmp_path, tmp_path / "runs")
    good = (run / "last.pt").read_bytes()
    train = load_tool("train")
    capsys.readouterr()
    disk_full(room=4096, only="last.pt")  # the disk fills up while epoch 2's last.pt is written
    assert train.main(["--resume", str(run), "--no-progress"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line == f"error: disk full while saving {run / 'last.pt'}; the previous last.pt is intact"
    assert (run / "last.pt").read_bytes() == good and not list(run.glob(".*.tmp"))
    disk_full.free()
    assert train.main(["--resume", str(run), "--no-progress"]) == 0  # once space is freed
    out = capsys.readouterr().out
    assert "resumed" in out and "at epoch 1 (iteration 2)" in out and "done: 2 epochs" in out
    with (run / "results.csv").open() as fh:
        assert [line.split(",")[0] for line in fh.read().splitlines()] == ["epoch", "1", "2"]


def test_read_only_output_dir_is_one_line(tmp_path, capsys, monkeypatch):
    cfg = tiny_config(tmp_path / "ro.yaml", descriptor(tmp_path), tmp_path / "runs")
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "runs")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    capsys.readouterr()
    assert load_tool("train").main([str(cfg), "--no-progress"]) == 1
    assert _one_line(capsys.readouterr().err) == f"error: cannot write {tmp_path / 'runs' / 'cli'}: read-only file system"


def test_real_tmpfs_full_then_read_only_then_resume(tmp_path, capsys, small_tmpfs):
    """On a real 12 MB tmpfs: epoch 1's last.pt (~7 MB) fits, the atomic rewrite of epoch 2 (old + new) does
    not; then the same disk read-only; then grown, and --resume finishes the run."""
    import subprocess

    disk = small_tmpfs("12m")
    _, run = _first_epoch(tmp_path, disk / "runs")
    good = (run / "last.pt").read_bytes()
    assert len(good) > 6_000_000  # else the tmpfs size no longer makes the second save overflow
    train = load_tool("train")
    capsys.readouterr()
    assert train.main(["--resume", str(run), "--no-progress"]) == 1
    assert _one_line(capsys.readouterr().err) == (f"error: disk full while saving {run / 'last.pt'}; the previous "
                                                  "last.pt is intact")
    assert (run / "last.pt").read_bytes() == good and not list(run.glob(".*.tmp"))
    small_tmpfs.read_only(disk)
    assert train.main(["--resume", str(run), "--no-progress"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line == f"error: cannot write {run / 'config.yaml'}: read-only file system; the previous config.yaml is intact"
    proc = subprocess.run(["mount", "-o", "remount,rw,size=32m", str(disk)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert train.main(["--resume", str(run), "--no-progress"]) == 0
    assert "done: 2 epochs" in capsys.readouterr().out
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2 and not list(run.glob(".*.tmp"))


# Runs tools/train.py in a child whose rename of results.csv (the atomic rewrite that trims it on resume)
# drops a marker and hangs: the parent kill -9s the child inside that window.
HANG_IN_RESULTS_REWRITE = r"""
import runpy, sys, time
from pathlib import Path
import cspdet.fileio as fileio

marker = Path(sys.argv[1])
real_commit = fileio._commit

def commit(tmp, path):
    if Path(path).name == "results.csv":
        marker.write_text(Path(tmp).read_text())
        time.sleep(600)
    real_commit(tmp, path)

fileio._commit = commit
sys.argv = ["tools/train.py", *sys.argv[2:]]
runpy.run_path("tools/train.py", run_name="__main__")
"""


def test_kill_9_while_results_csv_is_rewritten_loses_no_history(tmp_path, capsys):
    """A run killed after writing epoch 2's row but before epoch 2's checkpoint: resuming trims results.csv
    to the checkpoint's epochs. A SIGKILL inside that rewrite must leave every row already written."""
    import signal
    import time

    from cspdet.config import load_config

    cfg, run = _first_epoch(tmp_path, tmp_path / "runs")
    epoch1 = (run / "last.pt").read_bytes()
    Trainer(load_config(cfg), resume=run / "last.pt", progress=False).fit()  # epoch 2: row 2 and last.pt
    (run / "last.pt").write_bytes(epoch1)  # ... as if killed before that last.pt was saved
    history = (run / "results.csv").read_text()
    assert [r.split(",")[0] for r in history.splitlines()] == ["epoch", "1", "2"]

    marker = tmp_path / "rewriting"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    child = subprocess.Popen([sys.executable, "-c", HANG_IN_RESULTS_REWRITE, str(marker), "--resume", str(run),
                              "--no-progress"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), child.communicate(timeout=10)[1][-3000:] if child.poll() is not None else "timeout"
        assert [r.split(",")[0] for r in marker.read_text().splitlines()] == ["epoch", "1"]  # the trimmed file
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert (run / "results.csv").read_text() == history  # header and every row survive the kill
    capsys.readouterr()
    assert load_tool("train").main(["--resume", str(run), "--no-progress"]) == 0
    assert "done: 2 epochs" in capsys.readouterr().out
    rows = (run / "results.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["epoch", "1", "2"] and rows[:2] == history.splitlines()[:2]
    assert not list(run.glob(".*.tmp"))  # the killed rewrite's temp file is gone


# Each torchrun worker writes its pid to DIR/pid<RANK>, then runs tools/train.py.
RECORD_PID = r"""
import os, runpy, sys
from pathlib import Path

Path(sys.argv[1], "pid" + os.environ["RANK"]).write_text(str(os.getpid()))
sys.argv = ["tools/train.py", *sys.argv[2:]]
runpy.run_path("tools/train.py", run_name="__main__")
"""


def test_killed_ddp_rank_ends_the_run_within_seconds(tmp_path):
    """kill -9 of one of 2 torchrun ranks mid-training: the other rank and torchrun exit promptly (no rank
    left hanging in a collective)."""
    import signal
    import time

    cfg = tiny_config(tmp_path / "ddp.yaml", descriptor(tmp_path), tmp_path / "runs", epochs=500, eval_interval=0,
                      save_interval=1000, no_aug_epochs=0)
    wrapper = tmp_path / "record_pid.py"
    wrapper.write_text(RECORD_PID)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(wrapper), str(tmp_path), str(cfg), "--no-progress"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    results = tmp_path / "runs" / "cli" / "results.csv"
    try:
        deadline = time.monotonic() + 240
        while not results.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert results.exists(), proc.communicate(timeout=30)[0][-3000:] if proc.poll() is not None else "timeout"
        pids = {r: int((tmp_path / f"pid{r}").read_text()) for r in (0, 1)}
        os.kill(pids[1], signal.SIGKILL)  # rank 1 dies mid-training; rank 0 is in (or near) a collective
        killed = time.monotonic()
        proc.wait(timeout=60)
        seconds = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0]
    print(f"torchrun exited {seconds:.1f} s after rank 1 was killed")
    assert proc.returncode != 0 and seconds < 30, out[-3000:]
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)  # rank 0 is gone too
