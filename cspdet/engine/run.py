"""What the detection :class:`~cspdet.engine.trainer.Trainer` and the classification
:class:`~cspdet.engine.classify.ClassifierTrainer` share: one training *run* on one or more processes.

A run owns a directory (``config.yaml``, ``last.pt``, ``best.pt``, ``results.csv``, TensorBoard events), can be
stopped and resumed exactly, and under ``torchrun`` only rank 0 writes files or prints. The two trainers
differ in data, model, loss, schedule and metrics; the bookkeeping around them lives here so that both keep
the same run layout, checkpoint format and resume rules:

- RNG seeding, capture and restore (:func:`seed_everything`, :func:`capture_rng_state`, ...);
- ``--resume`` resolution, run-directory numbering and the one-writer lock (:mod:`cspdet.engine.rundir`);
- :class:`TrainingRun`, a plain base class holding the process/device/thread setup, AMP, resume checks and
  restore, ``results.csv`` handling, checkpoint writing, the run header, and **the one training loop**: the epoch
  loop (:meth:`TrainingRun.fit`: evaluation when due, ``best.pt``, early stopping, ``last.pt``) and the iteration
  loop (lr of the step, forward, backward with gradient accumulation and DDP's ``no_sync``, optimizer step, EMA),
  with the events callbacks hook into (:mod:`cspdet.engine.callbacks`: console, ``results.csv`` and TensorBoard
  logging are callbacks too). A task plugs in what differs: :meth:`TrainingRun.train_step` (one batch's forward
  and loss), :meth:`TrainingRun.evaluate`, :meth:`TrainingRun.on_epoch_begin`, its :class:`EpochMeter`, the
  score ``best.pt`` follows (:attr:`TrainingRun.score_key`), its ``results.csv`` row and header lines;
- :func:`run_training_cli`, the exit-code handling of ``tools/train.py`` and ``tools/pretrain.py``.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..config import Config, ConfigError, config_to_dict, save_config, validate_config
from ..fileio import OutputError, as_output_error, make_dirs, remove_stale_temps
from .callbacks import (
    BatchStats,
    CallbackList,
    ConsoleLogger,
    EpochStats,
    ResultsLogger,
    TensorBoardLogger,
    trim_results_csv,
)
from ..runtime.checkpoint import CheckpointError, load_checkpoint, new_checkpoint, save_checkpoint
from .distributed import (
    DeviceError,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
    select_device,
)
from .ema import ModelEMA, unwrap_model
from .optim import set_lr
from .resources import apply_threads, plan_threads, plan_workers, resolve_bf16
from .rng import capture_rng_state, restore_rng_state, seed_everything
from .rundir import (
    RUN_OUTPUTS,
    ResumeError,
    RunBusyError,
    RunLock,
    clear_run_outputs,
    find_resume_checkpoint,
    new_run_dir,
)

__all__ = [
    "EpochMeter",
    "NonFiniteLossError",
    "RUN_OUTPUTS",
    "ResumeError",
    "RunBusyError",
    "RunFinished",
    "TrainingRun",
    "all_reduce_finite",
    "capture_rng_state",
    "find_resume_checkpoint",
    "new_run_dir",
    "restore_rng_state",
    "run_training_cli",
    "seed_everything",
]

# Faults of the machine that end a run with a one-line message rather than a traceback.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf; the message names the epoch, iteration, batch and loss term."""


class RunFinished(RuntimeError):
    """``--resume`` of a run that already trained all its epochs."""


# ------------------------------------------------------------------------------------ helpers


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(section.key, old value, new value)`` for every key that differs between two config dicts."""
    diffs = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append((f"{section}.{key}", a.get(key), b.get(key)))
    return diffs


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model.state_dict()`` (what checkpoints store)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def all_reduce_finite(local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum a 1-D tensor over ranks, NaN/Inf counted as 0, plus per entry how many ranks had it non-finite.

    Both come from one all-reduce so that every rank learns in the same step that some rank diverged and
    all of them stop together (a rank raising alone would leave the others hanging in the next collective).
    Returns CPU tensors ``(sums, bad_counts)``.
    """
    bad = ~torch.isfinite(local)
    packed = torch.cat([torch.nan_to_num(local, nan=0.0, posinf=0.0, neginf=0.0), bad.float()])
    total = all_reduce_sum(packed).cpu()
    n = local.numel()
    return total[:n], total[n:]


class EpochMeter:
    """What the progress bar and the epoch's line show of one epoch: running means of the losses a task's
    :meth:`TrainingRun.train_step` logs. A task that logs something other than losses (the classifier's count of
    correct predictions) subclasses it.

    Args:
        keys: the losses, in display order (``"loss"``, the total, first).
    """

    def __init__(self, keys: Iterable[str]):
        self.sums = dict.fromkeys(keys, 0.0)
        self.count = 0
        self.images = 0

    def update(self, logged: dict[str, float], images: int) -> dict[str, float]:
        """Add one step: ``logged`` (means over processes), ``images`` (all processes). Returns the step's
        losses (:attr:`BatchStats.losses <cspdet.engine.callbacks.BatchStats.losses>`)."""
        for key in self.sums:
            self.sums[key] += logged[key]
        self.count += 1
        self.images += images
        return {key: logged[key] for key in self.sums}

    def postfix(self) -> str:
        """The progress bar's numbers (before ``lr=`` and the rate)."""
        return " ".join(f"{k.replace('_loss', '')}={v / self.count:.3f}" for k, v in self.sums.items())

    def losses(self) -> dict[str, float]:
        """The epoch's mean losses (:attr:`EpochStats.losses <cspdet.engine.callbacks.EpochStats.losses>`)."""
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}

    def extra(self) -> dict[str, float]:
        """Other per-epoch numbers (:attr:`EpochStats.extra <cspdet.engine.callbacks.EpochStats.extra>`)."""
        return {}


# ------------------------------------------------------------------------------------------ base class


class TrainingRun(abc.ABC):
    """Run bookkeeping shared by the detection and classification trainers (see the module docstring).

    Not used on its own. A subclass (a task: detection, classification) sets :attr:`kind` (the checkpoint
    ``"kind"``), :attr:`sections`, :attr:`summary_metrics`, :attr:`score_key`, :attr:`score_name` and
    :attr:`best_key` and, in its ``__init__``, calls the ``_setup_*`` / ``_open_*`` helpers in order and assigns
    ``model``, ``optimizer``, ``schedule``, ``ema``, ``train_loader``, ``iters_per_epoch``, ``train_set`` (for
    ``class_names``), ``run_dir``, ``total_epochs``, ``eval_interval`` and, where they differ from the defaults,
    ``accumulate``, ``grad_clip``, ``save_interval`` and ``patience``. It provides :meth:`train_step`,
    :meth:`evaluate`, :meth:`_checkpoint_meta` (the kind-specific checkpoint entries), :meth:`results_row` and
    :meth:`_header_lines`, and may override :meth:`on_epoch_begin` and :meth:`new_meter`. :meth:`fit` is the
    loop of every task.

    ``callbacks`` (a :class:`~cspdet.engine.callbacks.CallbackList`) holds the console, ``results.csv`` and
    TensorBoard loggers; append your own before ``fit()``.
    """

    kind: str = ""
    sections: tuple[str, ...] = ()
    """The config sections the run uses: written to ``config.yaml`` and checkpoints, compared on resume."""
    summary_metrics: tuple[str, ...] = ()
    """Metrics shown in the per-epoch line."""
    score_key: str = ""
    """The metric (a key of :meth:`evaluate`'s dict) ``best.pt`` and early stopping follow."""
    score_name: str = ""
    """How :attr:`score_key` is spelled in messages."""
    best_key: str = ""
    """Where the best score goes in checkpoints and in :meth:`fit`'s summary (``best_ap``, ``best_top1``)."""
    best_score: float = -1.0
    """The best evaluation score (:attr:`score_key`) so far; -1 before the first evaluation."""
    best_epoch: int = 0
    """The epoch (1-based) of the best score so far (0: none yet)."""
    stop_reason: str | None = None
    """Set by :meth:`request_stop` (early stopping, a callback): the run ends after the current epoch."""
    patience: int = 0
    """Early stopping: end the run after this many epochs without a better score (0: never)."""
    accumulate: int = 1
    """Iterations whose gradients add up to one optimizer step."""
    grad_clip: float | None = None
    save_interval: int = 1
    """``last.pt`` is written every this many epochs (and after the last epoch of a ``fit()`` and at a stop)."""
    writer: Any = None
    _lock: RunLock | None = None

    # ----------------------------------------------------------------------------------------- setup

    def _setup_process(self, device: str, section: str = "train") -> None:
        """Check ``self.cfg`` (a config built in Python skipped load_config's checks), join the torchrun
        process group (if any) and pick this rank's device."""
        validate_config(self.cfg)
        try:
            self.dist = init_distributed(device)
            self.rank, self.world_size = self.dist.rank, self.dist.world_size
            self.is_main = self.rank == 0
            if self.world_size > 1 and device.startswith("cuda:"):
                # every rank would take the same GPU and NCCL fails obscurely; torchrun assigns LOCAL_RANK
                raise DeviceError(f"{device!r} pins all {self.world_size} processes to one GPU; use cuda or auto")
            self.device = select_device(device, self.dist.local_rank)
        except DeviceError as err:
            raise ConfigError(f"{section}.device: {err}") from None

    def _setup_threads(self, requested: int | None, workers: int, section: str = "train") -> None:
        """This process's intra-op thread count (:func:`cspdet.engine.resources.plan_threads`): on CPU, the
        cores left beside the training loader workers, unless ``<section>.threads`` says otherwise."""
        local = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
        workers = plan_workers(self.device.type, workers)  # capped at the cores, as the loaders cap them
        self.threads = plan_threads(self.device.type, workers, requested, f"{section}.threads", local)
        apply_threads(self.threads)

    def _setup_run_dir(self, resuming: bool, run_dir: str | os.PathLike | None, output_dir: str, name: str,
                       exist_ok: bool) -> None:
        """A resumed run keeps its directory; otherwise ``run_dir`` or a fresh numbered one."""
        if resuming:
            self.run_dir = Path(self.resume_path).parent
        elif run_dir is not None:
            self.run_dir = Path(run_dir)
        else:
            # Rank 0 picks (it looks at the file system, which may change under the other ranks' feet) and
            # broadcasts, so all ranks agree on one directory.
            self.run_dir = Path(broadcast_object(new_run_dir(output_dir, name, exist_ok) if self.is_main else None))

    def _setup_amp(self, amp: bool, bf16: bool | str) -> None:
        """fp16 autocast + GradScaler on CUDA (when ``amp``); bf16 autocast on CPU (when ``bf16``; ``auto`` = where
        the CPU has native bf16, :func:`~cspdet.engine.resources.resolve_bf16`)."""
        self.use_bf16 = resolve_bf16(bf16, self.device.type) if self.device.type == "cpu" else False
        if self.device.type != "cpu":
            self._precision = "fp16 autocast" if amp and self.device.type == "cuda" else "fp32"
        else:
            why = ""
            if bf16 == "auto":
                why = (" (bf16: auto, the CPU has native bf16)" if self.use_bf16 else
                       " (bf16: auto, no native bf16 on this CPU: emulated bf16 is slower than fp32)")
            self._precision = ("bf16 autocast" if self.use_bf16 else "fp32") + why
        self.use_amp = amp and self.device.type == "cuda"
        # A disabled scaler passes everything through, so the step code is the same with and without AMP.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        if self.device.type == "cuda":
            self.autocast = torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp)
        else:
            self.autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.use_bf16)

    def _wrap_ddp(self) -> None:
        # Wrapped only after restoring a checkpoint, so state dicts never carry DDP's "module." prefix.
        if self.world_size > 1:
            ddp_kwargs = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
            self.model = nn.parallel.DistributedDataParallel(self.model, **ddp_kwargs)

    def _open_outputs(self, cfg: Config, resuming: bool, trim_results: bool, exist_ok: bool = False) -> None:
        """Rank 0: take the run directory's lock (:class:`~cspdet.engine.rundir.RunLock`; a second writer is
        refused with :class:`RunBusyError`), clear a reused directory (``exist_ok``), write ``config.yaml``,
        open TensorBoard and tidy ``results.csv``. Every rank: the default callbacks."""
        self.writer = None
        self.csv_path = self.run_dir / "results.csv"
        self.callbacks = CallbackList([ConsoleLogger(), ResultsLogger(), TensorBoardLogger()])
        if not self.is_main:
            return
        self._lock = RunLock(self.run_dir)
        self._lock.acquire()
        try:
            if exist_ok and not resuming:
                clear_run_outputs(self.run_dir)
            make_dirs(self.run_dir)
            # A run killed mid-write left a partial temp file next to the intact file; it is never read (the
            # rename did not happen), so drop it rather than let killed runs accumulate them.
            for directory in (self.run_dir, self.run_dir / "eval"):
                remove_stale_temps(directory)
            save_config(cfg, self.run_dir / "config.yaml", self.sections)
            from torch.utils.tensorboard import SummaryWriter  # heavy import: only on the rank that logs

            # purge_step drops events a killed run logged after its last checkpoint.
            self.writer = SummaryWriter(str(self.run_dir), purge_step=self.iteration + 1 if resuming else None)
            if trim_results:
                trim_results_csv(self.csv_path, self.start_epoch)
        except BaseException:
            self._lock.release()
            raise

    def header(self) -> list[str]:
        """The lines printed when ``fit()`` starts: run directory, the subclass's model / data / schedule
        lines (:meth:`_header_lines`), device and threads."""
        start = (f"resumed from {Path(self.resume_path).name} at epoch {self.start_epoch}"
                 if getattr(self, "resume_path", None) is not None else "new run")
        lines = [f"run       {self.run_dir} ({start})", *self._header_lines()]
        procs = f" x {self.world_size} processes" if self.world_size > 1 else ""
        lines.append(f"device    {self.device}{procs}, {self.threads.threads} intra-op thread"
                     f"{'s' if self.threads.threads != 1 else ''} ({self.threads.reason}); {self._precision}")
        return lines

    @abc.abstractmethod
    def _header_lines(self) -> list[str]:
        """The kind-specific header lines (model, data, schedule)."""

    @abc.abstractmethod
    def results_row(self, stats: EpochStats) -> tuple[list[str], list[Any]]:
        """``(header, row)`` of the epoch's ``results.csv`` line."""

    def _log(self, message: str) -> None:
        if self.is_main and message:
            print(message, flush=True)

    # ---------------------------------------------------------------------------------------- resume

    def _open_resume_checkpoint(self, resume: str | os.PathLike | bool, output_dir: str) -> dict[str, Any]:
        """Load the checkpoint ``--resume`` names; sets ``resume_path``. Raises :class:`ResumeError`."""
        path = find_resume_checkpoint(resume, output_dir)
        self.resume_path = path
        try:
            ckpt = load_checkpoint(path, kind=self.kind)
        except CheckpointError as err:
            raise ResumeError(f"--resume: {err}") from None
        if "trainer" not in ckpt:
            raise ResumeError(f"--resume: {path} holds weights only (no trainer state); resume from a last.pt")
        return ckpt

    def _check_resume_config(self, old: dict[str, Any], new: dict[str, Any], safe_keys: Iterable[str],
                             advice: str) -> None:
        """Refuse to resume when the config changed in a key that affects the trained weights (only the run's
        :attr:`sections` count: a detection run ignores ``pretrain``, pretraining everything but it)."""
        old, new = ({k: v for k, v in d.items() if k in self.sections} for d in (old, new))
        diffs = [d for d in config_diff(old, new) if d[0] not in safe_keys]
        if diffs:
            shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs[:6])
            more = f" (and {len(diffs) - 6} more)" if len(diffs) > 6 else ""
            raise ResumeError(
                f"--resume: the config differs from the one {self.resume_path} was trained with: {shown}{more}. "
                + advice
            )

    def _best_score(self, ckpt: dict[str, Any], key: str) -> float:
        """The best score so far: ``best.pt`` may be newer than ``last.pt`` (a kill between the two saves, or
        ``save_interval > 1``), and a resumed run must not overwrite a better ``best.pt`` with a worse model.
        Also sets :attr:`best_epoch` when ``best.pt`` is the better one."""
        best = float(ckpt.get(key, -1.0))
        best_path = Path(self.resume_path).parent / "best.pt"
        if best_path.is_file():
            try:
                saved = load_checkpoint(best_path)
            except CheckpointError:
                return best  # an unreadable best.pt will simply be replaced by the next best model
            if float(saved.get(key, -1.0)) > best:
                best, self.best_epoch = float(saved[key]), int(saved.get("epoch", self.best_epoch))
        return best

    def _restore_training_state(self, ckpt: dict[str, Any], ema_decay: float) -> None:
        """Weights, optimizer, scaler, EMA, epoch/iteration counters and this rank's RNG state from ``ckpt``."""
        state = ckpt["trainer"]
        model = unwrap_model(self.model)
        # With EMA on, ckpt["model"] holds the EMA weights and the raw ones are in the trainer state.
        model.load_state_dict(state["model"] if "model" in state else ckpt["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):  # a CPU run saves a disabled scaler's empty state; resuming on CUDA starts afresh
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if "ema_updates" in state:
                self.ema.load_state_dict({"model": ckpt["model"], "updates": state["ema_updates"]})
            else:  # the run had EMA off: start the average at the current weights
                self.ema = ModelEMA(model, ema_decay)
        self.start_epoch = int(ckpt["epoch"])
        self.iteration = int(state["iteration"])
        self.best_epoch = int(state.get("best_epoch", 0))
        self.stop_reason = state.get("stop_reason")
        # Per-rank RNG streams only fit the same number of processes; otherwise they are re-derived from seeds.
        rng = state.get("rng") or []
        if len(rng) == self.world_size:
            self.rng_state = rng[self.rank]

    # -------------------------------------------------------------------------------------- training

    # What a task plugs into the loop.

    @abc.abstractmethod
    def train_step(self, batch: Any, epoch: int, i: int) -> tuple[torch.Tensor, dict[str, float], int]:
        """One batch of training up to the loss: move the batch to the device, forward under ``self.autocast``,
        and the values to log averaged over the processes (raising :class:`NonFiniteLossError` on every process
        when one of them is NaN/Inf). The loop does the backward pass, the accumulation and the optimizer step.

        Returns:
            ``(loss, logged, images)``: the scalar loss to back-propagate (this process's, as the model returns it),
            what this task's :class:`EpochMeter` reads, and the number of images of this process's batch.
        """

    @abc.abstractmethod
    def evaluate(self, epoch: int, outputs: bool | None = None) -> dict[str, float]:
        """Scores of :meth:`eval_model` after epoch ``epoch`` (0-based), with :attr:`score_key` among them. Every
        process calls it. ``outputs``: also leave files (the final evaluation, or one after which early stopping may
        end the run); a task without files ignores it."""

    def on_epoch_begin(self, epoch: int) -> None:
        """Before the first batch of epoch ``epoch`` (data reseeded, model in train mode): the task's per-epoch
        changes, as pure functions of the epoch so that a resumed run continues exactly."""

    def new_meter(self) -> EpochMeter:
        """The meter of one epoch (default: means of the ``"loss"`` that :meth:`train_step` logs)."""
        return EpochMeter(("loss",))

    # The loop.

    def fit(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train from ``start_epoch`` to :attr:`total_epochs` (or only up to epoch ``stop_after``, saving ``last.pt``
        there, to be continued with ``resume``; or until early stopping or a callback ends the run).

        Each epoch: ``on_epoch_start``, the iterations, an evaluation when due (every ``eval_interval`` epochs and
        after the last; a better :attr:`score_key` writes ``best.pt``; early stopping is decided here;
        ``on_eval_end``), ``on_epoch_end``, then ``last.pt`` (every :attr:`save_interval` epochs, after the last
        epoch of this call and when the run stops).

        Returns:
            rank 0's view: ``{"epoch": epochs done, best_key: best score, "metrics": last evaluation, "run_dir",
            "stop_reason"}`` (``best_key``: ``best_ap`` for detection, ``best_top1`` for classification).
        """
        epochs = self.total_epochs
        end = epochs if stop_after is None else min(stop_after, epochs)
        if self.rng_state is not None:
            restore_rng_state(self.rng_state)
        metrics: dict[str, float] = {}
        epoch = self.start_epoch - 1
        try:
            self._begin_fit()
            for epoch in range(self.start_epoch, end):
                self.callbacks.fire("on_epoch_start", self, epoch)
                meter, lr, seconds = self._train_epoch(epoch)
                metrics, eval_seconds = {}, 0.0
                last = epoch + 1 == epochs
                if self._evaluates(epoch):
                    tic = time.perf_counter()
                    # the final evaluation, or one after which early stopping may end the run, leaves its files
                    metrics = self.evaluate(epoch, outputs=last or self._patience_exhausted(epoch + 1) is not None)
                    eval_seconds = time.perf_counter() - tic
                    if metrics.get(self.score_key, -1.0) > self.best_score:
                        self.best_score, self.best_epoch = metrics[self.score_key], epoch + 1
                        self._save(epoch + 1, self.run_dir / "best.pt", metrics, with_state=False)
                    if self.stop_reason is None:
                        self.stop_reason = self._patience_exhausted(epoch + 1)
                    self.callbacks.fire("on_eval_end", self, epoch, metrics)
                stats = self._epoch_stats(epoch, meter.losses(), lr, seconds, meter.images, metrics, eval_seconds,
                                          meter.extra())
                self.callbacks.fire("on_epoch_end", self, stats)
                stop = self.stop_reason is not None
                if last or stop or epoch + 1 == end or (epoch + 1) % max(self.save_interval, 1) == 0:
                    self._save(epoch + 1, self.run_dir / "last.pt", metrics, with_state=True)
                if stop:
                    break
            summary = {"epoch": epoch + 1, self.best_key: self.best_score, "metrics": metrics,
                       "run_dir": str(self.run_dir), "stop_reason": self.stop_reason}
            return self._end_fit(summary)
        finally:
            self._release()

    def _train_epoch(self, epoch: int) -> tuple[EpochMeter, float, float]:
        """One pass of the train loader. Per iteration: the lr of the step about to be taken (a pure function of
        the global iteration, YOLOX's convention), :meth:`train_step`, backward (the loss divided by the
        iterations of its accumulation group; DDP synchronises gradients only on the iteration that steps),
        optimizer step with clipping and EMA update every :attr:`accumulate` iterations (and at the end of the
        epoch). Returns ``(meter, last lr, seconds)``."""
        self._set_epoch(epoch)
        self.model.train()
        self.on_epoch_begin(epoch)
        meter = self.new_meter()
        lr = self.schedule(self.iteration + 1)
        bar = self._progress_bar(epoch, self.total_epochs)
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(self.train_loader):
            lr = self.schedule(self.iteration + 1)  # the lr of the step about to be taken (step 1 > 0 with warmup_lr 0)
            set_lr(self.optimizer, lr)
            self.callbacks.fire("on_batch_start", self, epoch, i, batch)
            group_start = (i // self.accumulate) * self.accumulate
            group_size = min(self.accumulate, self.iters_per_epoch - group_start)
            step_now = i + 1 == group_start + group_size
            sync = contextlib.nullcontext() if step_now or self.world_size == 1 else self.model.no_sync()
            with sync:
                loss, logged, images = self.train_step(batch, epoch, i)
                self.scaler.scale(loss.float() / group_size).backward()
            if step_now:
                self._optimizer_step(self.grad_clip)
            self.iteration += 1
            images *= self.world_size
            losses = meter.update(logged, images)
            self.callbacks.fire("on_batch_end", self, BatchStats(epoch, i, self.iteration, losses, lr, images))
            if bar is not None:
                rate = meter.images / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix_str(f"{meter.postfix()} lr={lr:.2e} {rate:.1f}img/s", refresh=False)
                bar.update(1)
        if bar is not None:
            bar.close()
        return meter, lr, time.perf_counter() - start

    def _set_epoch(self, epoch: int) -> None:
        # Dataset augmentation and the sampler's shuffle are reseeded from (seed, epoch): this is what makes a
        # resumed run see the same data as an uninterrupted one.
        if hasattr(self.train_loader.dataset, "set_epoch"):
            self.train_loader.dataset.set_epoch(epoch)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)

    def _progress_bar(self, epoch: int, epochs: int):
        """A tqdm bar for one epoch on rank 0 (``None`` elsewhere or with ``progress=False``); it disappears
        when the epoch ends, leaving the per-epoch line."""
        if not (self.is_main and self.progress):
            return None
        from tqdm import tqdm

        return tqdm(total=self.iters_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", dynamic_ncols=True, leave=False)

    def _evaluates(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) ends with an evaluation: every ``eval_interval`` and the last."""
        done = epoch + 1
        return done == self.total_epochs or (self.eval_interval > 0 and done % self.eval_interval == 0)

    def request_stop(self, reason: str) -> None:
        """End the run after the current epoch (its ``last.pt`` is saved); call it on every process."""
        self.stop_reason = reason

    def _patience_exhausted(self, epochs_done: int) -> str | None:
        """Why early stopping ends the run after ``epochs_done`` epochs (None: it does not)."""
        waited = epochs_done - self.best_epoch
        if not self.patience or waited < self.patience:
            return None
        return (f"early stop: no {self.score_name} improvement for {waited} epochs (train.patience={self.patience});"
                f" best {self.score_name} {self.best_score:.4f} at epoch {self.best_epoch} (best.pt)")

    def _begin_fit(self) -> None:
        """Take the lock again if a previous ``fit()`` released it, start the clock, fire ``on_run_start``."""
        if self._lock is not None:
            self._lock.acquire()
        self._clock = {"train": 0.0, "epochs": 0, "eval": 0.0, "evals": 0}
        self.callbacks.fire("on_run_start", self)

    def _epoch_stats(self, epoch: int, losses: dict[str, float], lr: float, seconds: float, images: int,
                     metrics: dict[str, float], eval_seconds: float, extra: dict[str, float] | None = None
                     ) -> EpochStats:
        """The epoch's :class:`EpochStats`, with the ETA of the run from the mean epoch and evaluation times
        of this ``fit()`` (0 s per evaluation until the first one)."""
        clock = self._clock
        clock["train"] += seconds
        clock["epochs"] += 1
        if metrics:
            clock["eval"] += eval_seconds
            clock["evals"] += 1
        evals_left = sum(1 for e in range(epoch + 1, self.total_epochs) if self._evaluates(e))
        eta = (clock["train"] / clock["epochs"] * (self.total_epochs - epoch - 1)
               + (clock["eval"] / clock["evals"] if clock["evals"] else 0.0) * evals_left)
        return EpochStats(epoch, self.total_epochs, losses, lr, seconds, images, metrics, eval_seconds,
                          eta if self.stop_reason is None else 0.0, extra or {})

    def _end_fit(self, summary: dict[str, Any]) -> dict[str, Any]:
        self.callbacks.fire("on_run_end", self, summary)
        if self.writer is not None:
            self.writer.close()
        return summary

    def _release(self) -> None:
        """After ``fit()`` (also when it failed): flush TensorBoard and free the run directory's lock."""
        try:
            if self.writer is not None:
                self.writer.flush()
        finally:
            if self._lock is not None:
                self._lock.release()

    def _optimizer_step(self, grad_clip: float) -> None:
        """Step on the gradients accumulated so far (clipped to ``grad_clip`` if set), then update the EMA."""
        if grad_clip:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the loss-scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    def eval_model(self) -> nn.Module:
        """The model evaluated and saved as "best": the EMA copy when EMA is on."""
        return self.ema.ema if self.ema is not None else unwrap_model(self.model)

    # ------------------------------------------------------------------------------------ persistence

    @abc.abstractmethod
    def _checkpoint_meta(self) -> dict[str, Any]:
        """Kind-specific checkpoint entries, provided by the subclass: ``spec`` and ``meta`` (plain data, see
        :mod:`cspdet.runtime.checkpoint`) and the best score so far."""

    def _save(self, epoch: int, path: Path, metrics: dict[str, float], with_state: bool) -> None:
        """Write a checkpoint: the eval weights and metadata, plus (``with_state``) all a resume needs.

        Every rank must call this: the RNG states are gathered from all ranks, then rank 0 writes.
        """
        rng = all_gather_objects(capture_rng_state()) if with_state else None
        if self.is_main:
            record = self._checkpoint_meta()
            ckpt = new_checkpoint(self.kind, record.pop("spec"), record.pop("meta"), cpu_state(self.eval_model()),
                                  epoch=epoch, metrics={k: float(v) for k, v in metrics.items()}, **record,
                                  config=config_to_dict(self.cfg, self.sections))
            if with_state:
                state: dict[str, Any] = {
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "schedule": self.schedule.state_dict(),
                    "iteration": self.iteration,
                    "rng": rng,
                    "world_size": self.world_size,
                    "best_epoch": self.best_epoch,
                    "stop_reason": self.stop_reason,
                }
                if self.ema is not None:  # "model" above is the EMA; resuming also needs the raw weights
                    state["model"] = cpu_state(unwrap_model(self.model))
                    state["ema_updates"] = self.ema.updates
                ckpt["trainer"] = state
            save_checkpoint(ckpt, path)
        barrier()


# ------------------------------------------------------------------------------------------------- CLI


def run_training_cli(train: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], str]) -> int:
    """Run ``train()`` for a command-line tool and turn its outcome into an exit code.

    0: finished (rank 0 prints ``done(summary)``) or the resumed run had nothing left to do; 1: a data,
    checkpoint, resume, evaluation or divergence error, another process writing the run directory, or an
    output that could not be written (disk full,
    read-only file system: the files written before are intact and ``--resume`` continues once it is fixed);
    2: a config error; 130: Ctrl-C. Errors print one line to stderr instead of a traceback. The process group
    is torn down in every case.
    """
    from ..data.problems import DatasetError
    from .distributed import destroy_distributed, env_dist_info
    from .coco_metrics import EvaluationError

    try:
        summary = train()
    except RunFinished as err:
        print(err, file=sys.stderr)
        return 0
    except (ConfigError, CheckpointError, ResumeError, RunBusyError, DatasetError, NonFiniteLossError,
            EvaluationError, OutputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    except OSError as err:
        if err.errno not in OUTPUT_ERRNOS:
            raise
        # a write outside atomic_write (e.g. TensorBoard's event file) hit the same fault of the machine
        print(f"error: {as_output_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: resume with --resume (continues from the last saved epoch)", file=sys.stderr)
        return 130
    finally:
        destroy_distributed()
    if env_dist_info().is_main:
        print(done(summary))
    return 0
