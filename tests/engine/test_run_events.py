"""What a training run shows and decides around the loop: thread count, schedule scaling for short runs, the
run header and per-epoch line, callbacks, early stopping, and the one-writer lock of a run directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_trainer import tiny_raw, write_shapes_descriptor  # tests/engine/test_trainer.py

from cspdet.config import ConfigError, config_from_dict
from cspdet.engine.callbacks import Callback, EpochStats, format_duration
from cspdet.runtime.checkpoint import load_checkpoint
from cspdet.engine.optim import scaled_schedule_epochs, with_scaled_schedule
from cspdet.engine import resources
from cspdet.engine.resources import AUTO_GPU_WORKERS, plan_threads, plan_workers, resolve_bf16
from cspdet.engine.run import RunBusyError, RunFinished, new_run_dir
from cspdet.engine.rundir import LOCK_NAME, RunLock
from cspdet.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_shapes_descriptor(tmp_path_factory.mktemp("shapes"))


def test_bf16_auto_follows_the_cpu(monkeypatch):
    """train.bf16: auto = bf16 autocast only on a CPU that computes bf16 natively; true / false as given."""
    for native in (True, False):
        monkeypatch.setattr(resources.cpu, "native_bf16", lambda native=native: native)
        assert resolve_bf16("auto", "cpu") is native
        assert resolve_bf16("auto", "cuda") is False  # CUDA runs use fp16 amp
        assert resolve_bf16(True, "cpu") is True and resolve_bf16(False, "cpu") is False
    cfg = config_from_dict({"train": {"bf16": "auto"}})
    assert cfg.train.bf16 == "auto"
    with pytest.raises(ConfigError, match="train.bf16"):
        config_from_dict({"train": {"bf16": "sometimes"}})


def test_thread_rule_leaves_cores_to_the_loader_workers():
    # the make-demo case: 2 cores, 2 training loader workers -> 1 thread instead of torch's 2
    plan = plan_threads("cpu", workers=2, cores=2, current=2)
    assert plan.threads == 1 and plan.reason.startswith("auto: 2 cores - 2 loader workers")
    assert plan_threads("cpu", workers=2, cores=8, current=8).threads == 6
    assert plan_threads("cpu", workers=0, cores=8, current=8).threads == 8
    assert plan_threads("cpu", workers=4, cores=2, current=2).threads == 1  # never below 1
    two = plan_threads("cpu", workers=2, cores=8, current=8, local_processes=2)  # torchrun: cores are shared
    assert two.threads == 2 and "8 cores / 2 processes" in two.reason
    capped = plan_threads("cpu", workers=0, cores=8, current=1)  # OMP_NUM_THREADS=1 is never raised
    assert capped.threads == 1 and "OMP_NUM_THREADS" in capped.reason
    assert plan_threads("cpu", workers=2, requested=3, cores=2, current=2).threads == 3  # an explicit setting wins
    assert plan_threads("cpu", 0, requested=3, key="pretrain.threads").reason == "pretrain.threads=3"
    assert plan_threads("cuda", workers=8, cores=2, current=2).threads == 2  # on CUDA torch's default stays


def test_worker_rule_gives_a_cpu_run_every_core():
    # data.workers unset: no loader workers on a CPU (the forward/backward dominates; the thread rule then gives
    # torch every core), AUTO_GPU_WORKERS on a GPU; an explicit setting wins; never more than the cores
    assert plan_workers("cpu", None, cores=2) == 0
    assert plan_threads("cpu", plan_workers("cpu", None, cores=2), cores=2, current=2).threads == 2
    assert plan_workers("cuda", None, cores=16) == AUTO_GPU_WORKERS and plan_workers("cuda", None, cores=2) == 2
    assert plan_workers("cpu", 3, cores=8) == 3 and plan_workers("cpu", 0, cores=8) == 0
    assert plan_workers("cpu", 12, cores=8) == 8


def test_short_runs_scale_warmup_and_no_aug_tail():
    assert scaled_schedule_epochs(300) == (5, 15)  # YOLOX
    assert scaled_schedule_epochs(100) == (5, 10)  # Ultralytics closes mosaic for the last 10 of 100
    assert scaled_schedule_epochs(30) == (3, 3)
    assert scaled_schedule_epochs(2) == (0.2, 0)  # warm-up ends, the run keeps its augmentation
    assert scaled_schedule_epochs(1) == (0.1, 0)
    assert scaled_schedule_epochs(2, 1.5, 1) == (1.5, 1)  # set values are kept
    # a run written with explicit numbers resumes under a config that leaves them to the rule (and back)
    explicit = {"train": {"epochs": 300, "warmup_epochs": 5.0, "no_aug_epochs": 15}}
    auto = {"train": {"epochs": 300, "warmup_epochs": None, "no_aug_epochs": None}}
    assert with_scaled_schedule(explicit) == with_scaled_schedule(auto)


def test_batch_larger_than_the_dataset_is_refused(shapes, tmp_path):
    cfg = config_from_dict(tiny_raw(shapes, tmp_path, batch_size=9))  # 8 training images
    with pytest.raises(ConfigError, match=r"^train.batch_size: 9 is larger than the 8 training images of .*; "
                                          r"use at most 8$"):
        Trainer(cfg, run_dir=tmp_path / "big", progress=False)
    assert not (tmp_path / "big").exists()


class Recorder(Callback):
    """Records every event; stops the run after ``stop_at`` epochs when given."""

    def __init__(self, stop_at: int | None = None):
        self.events: list[tuple] = []
        self.stats: list[EpochStats] = []
        self.stop_at = stop_at

    def on_run_start(self, run):
        self.events.append(("run_start", run.start_epoch))

    def on_epoch_start(self, run, epoch):
        self.events.append(("epoch_start", epoch))

    def on_batch_end(self, run, batch):
        self.events.append(("batch", batch.epoch, batch.index, batch.iteration, batch.images))
        assert batch.losses["loss"] > 0 and batch.lr > 0

    def on_eval_end(self, run, epoch, metrics):
        self.events.append(("eval", epoch, "AP" in metrics))

    def on_epoch_end(self, run, stats):
        self.events.append(("epoch_end", stats.epoch))
        self.stats.append(stats)
        if self.stop_at is not None and stats.epoch + 1 >= self.stop_at:
            run.request_stop("time budget used up")

    def on_run_end(self, run, summary):
        self.events.append(("run_end", summary["epoch"]))


def test_short_run_header_epoch_lines_and_callbacks(shapes, tmp_path, capsys):
    """A 2-epoch run with the schedule left to the rule: what it prints (header, one line per epoch, bars for
    the epoch and the evaluation) and the events a callback added from outside the loop receives."""
    raw = tiny_raw(shapes, tmp_path, warmup_epochs=None, no_aug_epochs=None)
    del raw["data"]["workers"]  # unset: the worker rule's choice (none on a CPU), said in the header
    trainer = Trainer(config_from_dict(raw), run_dir=tmp_path / "short", progress=True)
    assert (trainer.warmup_epochs, trainer.no_aug_epochs, trainer.no_aug_start) == (0.2, 0, 2)
    assert trainer.schedule.warmup_iters == pytest.approx(0.4) and trainer.schedule.no_aug_iters == 0
    recorder = Recorder()
    trainer.callbacks.append(recorder)
    summary = trainer.fit()
    out, err = capsys.readouterr()
    print(out)
    lines = out.splitlines()
    assert lines[0] == f"run       {tmp_path / 'short'} (new run)"
    assert lines[1].startswith("model     cspdarknet_s: 0.56 M parameters, ") and lines[1].endswith("GFLOPs at 64x64")
    assert lines[2].startswith(f"data      {shapes}: 8 train / 4 val images, 3 classes; batch 4 = 2 iterations")
    assert lines[2].endswith("; 0 loader workers (auto: none on a CPU; set data.workers to choose)")
    assert lines[3].startswith("schedule  2 epochs, sgd lr 0.000625, warm-up 0.2 epochs, no-aug tail 0 epochs "
                               "(train.warmup_epochs and train.no_aug_epochs scaled to 2 epochs")
    assert lines[4].startswith(f"device    cpu, {torch.get_num_threads()} intra-op thread")
    assert lines[4].endswith("; fp32")  # train.bf16 defaults to false
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    for line in epoch_lines:
        assert " img/s " in line and " ETA " in line and "| AP " in line and "(best " in line
    assert epoch_lines[0].startswith("epoch 1/2  loss ") and epoch_lines[1].endswith("s)")
    assert "epoch 1/2:" in err and "eval:" in err  # tqdm bars (on stderr) for the epoch and the evaluation

    assert recorder.events[0] == ("run_start", 0) and recorder.events[-1] == ("run_end", 2)
    assert [e for e in recorder.events if e[0] != "batch"][1:-1] == [
        ("epoch_start", 0), ("eval", 0, True), ("epoch_end", 0),
        ("epoch_start", 1), ("eval", 1, True), ("epoch_end", 1)]
    assert [e[1:] for e in recorder.events if e[0] == "batch"] == [(0, 0, 1, 4), (0, 1, 2, 4), (1, 0, 3, 4),
                                                                   (1, 1, 4, 4)]
    first, second = recorder.stats
    assert (first.epoch, first.epochs, first.images) == (0, 2, 8) and first.seconds > 0 and first.eta_seconds > 0
    assert second.eta_seconds == 0 and set(second.losses) == {"loss", "iou_loss", "obj_loss", "cls_loss", "l1_loss"}
    assert second.metrics["AP"] == summary["metrics"]["AP"] and summary["stop_reason"] is None
    assert [format_duration(s) for s in (4.24, 65, 7300, float("nan"))] == ["4.2s", "1m05s", "2h01m", "?"]


def test_a_callback_can_end_the_run(shapes, tmp_path, capsys):
    cfg = config_from_dict(tiny_raw(shapes, tmp_path, epochs=3, eval_interval=0, no_aug_epochs=0))
    trainer = Trainer(cfg, run_dir=tmp_path / "budget", progress=False)
    trainer.callbacks.append(Recorder(stop_at=1))
    summary = trainer.fit()
    assert summary["epoch"] == 1 and summary["stop_reason"] == "time budget used up"
    assert "stopped after epoch 1: time budget used up" in capsys.readouterr().out
    last = load_checkpoint(tmp_path / "budget" / "last.pt")
    assert last["epoch"] == 1 and last["trainer"]["stop_reason"] == "time budget used up"
    with pytest.raises(RunFinished, match=r"ended after epoch 1 \(time budget used up\)"):
        Trainer(cfg, resume=tmp_path / "budget", progress=False)


def test_early_stopping_with_patience_and_its_resume(shapes, tmp_path, capsys):
    """AP 0.5, 0.4, 0.3 (scripted) with patience 2: the run stops after epoch 3 with best.pt from epoch 1; the
    evaluation that could end the run leaves its files. Resuming refuses while the patience still holds and
    continues with a larger one."""
    cfg = config_from_dict(tiny_raw(shapes, tmp_path, epochs=5, eval_interval=1, no_aug_epochs=0, patience=2,
                                    log_images=0))
    scripted = iter([0.5, 0.4, 0.3, 0.35, 0.6])
    calls = []

    def fake_evaluate(epoch, outputs=None):
        calls.append((epoch, outputs))
        return {"AP": next(scripted), "AP50": 0.9}

    trainer = Trainer(cfg, run_dir=tmp_path / "patient", progress=False)
    trainer.evaluate = fake_evaluate
    summary = trainer.fit()
    assert summary["epoch"] == 3 and summary["best_ap"] == 0.5
    assert summary["stop_reason"] == ("early stop: no AP improvement for 2 epochs (train.patience=2); best AP 0.5000 "
                                      "at epoch 1 (best.pt)")
    assert calls == [(0, False), (1, False), (2, True)]  # only the last one may end the run
    assert "stopped after epoch 3: early stop" in capsys.readouterr().out
    run = tmp_path / "patient"
    assert load_checkpoint(run / "best.pt")["epoch"] == 1 and load_checkpoint(run / "last.pt")["epoch"] == 3
    with pytest.raises(RunFinished, match="resume with a larger train.patience"):
        Trainer(cfg, resume=run, progress=False)

    longer = config_from_dict(tiny_raw(shapes, tmp_path, epochs=5, eval_interval=1, no_aug_epochs=0, patience=4,
                                       log_images=0))
    resumed = Trainer(longer, resume=run, progress=False)  # train.patience may change on resume
    assert (resumed.start_epoch, resumed.best_epoch, resumed.best_ap) == (3, 1, 0.5)
    resumed.evaluate = fake_evaluate
    summary = resumed.fit()
    assert summary["epoch"] == 5 and summary["best_ap"] == 0.6 and summary["stop_reason"] is None
    with pytest.raises(ConfigError, match=r"^train.patience: early stopping compares evaluations; set "
                                          r"train.eval_interval > 0"):
        config_from_dict(tiny_raw(shapes, tmp_path, patience=3, eval_interval=0))


HOLD_LOCK = r"""
import sys, time
from cspdet.engine.rundir import RunLock
lock = RunLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_one_writer_per_run_directory_and_no_stale_lock_after_kill_9(shapes, tmp_path):
    run = tmp_path / "runs" / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = config_from_dict(tiny_raw(shapes, tmp_path / "runs", epochs=1, no_aug_epochs=0))
        with pytest.raises(RunBusyError, match=rf"another process \(pid {holder.pid}\) is writing this run"):
            Trainer(cfg, run_dir=run, progress=False)
        assert not (run / "config.yaml").exists()  # the refused run wrote nothing
        # a new run of the same name does not take the directory a starting run has locked
        assert new_run_dir(str(tmp_path / "runs"), "run") == str(tmp_path / "runs" / "run-2")
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()
    assert (run / LOCK_NAME).is_file()  # the file stays, its lock died with the process
    assert new_run_dir(str(tmp_path / "runs"), "run") == str(run)
    trainer = Trainer(cfg, run_dir=run, progress=False)
    with pytest.raises(RunBusyError):  # held for the run's life (a second RunLock counts as another writer)
        RunLock(run).acquire()
    trainer.fit()
    lock = RunLock(run)  # ... and released when fit() returns
    lock.acquire()
    lock.release()


def test_resume_compares_eval_settings_left_to_the_head_with_the_values_older_runs_wrote():
    """eval.conf / iou / max_det null (the head's defaults) equal the 0.001 / 0.65 / 300 a run saved before that
    default recorded, so such a run resumes with its own config; another value is still a difference."""
    from cspdet.engine.run import config_diff
    from cspdet.engine.trainer import _comparable

    old = {"train": {"epochs": 10}, "eval": {"conf": 0.001, "iou": 0.65, "max_det": 300}}
    new = {"train": {"epochs": 10}, "eval": {"conf": None, "iou": None, "max_det": None}}
    assert config_diff(_comparable(old), _comparable(new)) == []
    new["eval"]["conf"] = 0.01
    assert [d[0] for d in config_diff(_comparable(old), _comparable(new))] == ["eval.conf"]
