"""What the detection :class:`~cspdet.engine.trainer.Trainer` and the classification
:class:`~cspdet.engine.classify.ClassifierTrainer` share: one training *run* on one or more processes.

A run owns a directory (``config.yaml``, ``last.pt``, ``best.pt``, ``results.csv``, TensorBoard events), can be
stopped and resumed exactly, and under ``torchrun`` only rank 0 writes files or prints. The two trainers
differ in data, model, loss, schedule and metrics; the bookkeeping around them lives here so that both keep
the same run layout, checkpoint format and resume rules:

- RNG seeding, capture and restore (:func:`seed_everything`, :func:`capture_rng_state`, ...);
- ``--resume`` resolution, run-directory numbering and the one-writer lock (:mod:`cspdet.engine.rundir`);
- :class:`TrainingRun`, the base class both trainers derive from: the process/device/thread setup, AMP, resume
  checks and restore, ``results.csv`` handling, checkpoint writing and the run header; it runs **the one training
  loop** of :class:`~cspdet.engine.loop.TrainingLoop` (epochs, iterations, the events callbacks hook into), into
  which a task plugs ``train_step``, ``evaluate``, ``on_epoch_begin`` and its meter;
- :func:`run_training_cli`, the exit-code handling of ``tools/train.py`` and ``tools/pretrain.py``.
"""

from __future__ import annotations

import abc
import errno
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..config import Config, ConfigError, config_to_dict, save_config, validate_config
from ..fileio import OutputError, as_output_error, make_dirs, remove_stale_temps
from .callbacks import (
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
    barrier,
    broadcast_object,
    init_distributed,
    select_device,
)
from .ema import ModelEMA, unwrap_model
from .loop import EpochMeter, TrainingLoop, all_reduce_finite
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


# ------------------------------------------------------------------------------------------ base class


class TrainingRun(TrainingLoop):
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
