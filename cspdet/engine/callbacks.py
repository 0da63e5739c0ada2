"""Events of a training run, and the run's own console, ``results.csv`` and TensorBoard logging built on them.

The callback base (:class:`Callback`, :class:`CallbackList`, the event names) lives in
:mod:`cspdet.runtime.callbacks` beside the evaluation, prediction and export events (``on_val_end``,
``on_predict_batch_end``, ``on_export_end``) and is re-exported here. A callback is any object with some of the
hooks; a :class:`~cspdet.engine.run.TrainingRun` calls them in this order (``epoch`` is 0-based, as in the loop)::

    on_run_start(run)                      once, when fit() starts (also after --resume)
    on_epoch_start(run, epoch)             before the epoch (before its data are reseeded and the no-aug tail starts)
    on_batch_start(run, epoch, index, batch)   before the step on loader batch ``index``
    on_batch_end(run, batch: BatchStats)   after every training iteration
    on_eval_end(run, epoch, metrics)       after an evaluation (best score and best.pt already updated)
    on_epoch_end(run, stats: EpochStats)   after the epoch (and its evaluation), before last.pt is saved
    on_run_end(run, summary)               once, when fit() returns

Add one with ``trainer.callbacks.append(MyLogger())`` before ``fit()``: a W&B or MLflow logger, a time
budget, a per-epoch change of the head, without editing the loop. A callback may end the run early with
``run.request_stop("why")`` (the run saves ``last.pt`` and returns after that epoch). Hooks run on every
torchrun process, so that a callback that changes training does so on all of them; a callback that writes
or prints checks ``run.is_main``. What a callback keeps across ``--resume`` is its own business: the run's
state (``run.iteration``, ``run.best_epoch``, ...) is restored before ``on_run_start``, so a change of training
that is a function of the epoch (a per-epoch head schedule set in ``on_epoch_start``) resumes exactly.

Exceptions raised by a hook end the run like any training error.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import atomic_write
from ..runtime.callbacks import EVENTS, Callback, CallbackList

__all__ = ["BatchStats", "Callback", "CallbackList", "ConsoleLogger", "EVENTS", "EpochStats", "ResultsLogger",
           "TensorBoardLogger", "format_duration", "format_epochs", "trim_results_csv"]


@dataclass
class BatchStats:
    """One training iteration: ``losses`` averaged over processes, ``images`` of all processes."""

    epoch: int
    index: int
    """0-based iteration within the epoch."""
    iteration: int
    """Iterations done in the run so far, this one included."""
    losses: dict[str, float]
    lr: float
    images: int


@dataclass
class EpochStats:
    """One epoch, as the per-epoch line, ``results.csv`` and TensorBoard report it."""

    epoch: int
    """0-based."""
    epochs: int
    """Epochs of the whole run."""
    losses: dict[str, float]
    """Means over the epoch's iterations."""
    lr: float
    seconds: float
    """Training time of the epoch (data loading included, evaluation excluded)."""
    images: int
    metrics: dict[str, float] = field(default_factory=dict)
    """The evaluation after this epoch; empty when it was not evaluated."""
    eval_seconds: float = 0.0
    eta_seconds: float = math.nan
    """Estimated time until the last epoch of the run ends (evaluations included)."""
    extra: dict[str, float] = field(default_factory=dict)
    """Other per-epoch numbers of the trainer (e.g. the classifier's train accuracy)."""

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def format_duration(seconds: float) -> str:
    """``"4.2s"``, ``"42s"``, ``"3m05s"``, ``"2h07m"``; ``"?"`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 9.95:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_epochs(n: float, one: str = "1 epoch") -> str:
    """``"0.2 epochs"``, ``"1 epoch"``, ``"30 epochs"`` (``one``: how to say 1, e.g. ``"epoch"`` in "every epoch")."""
    return one if n == 1 else f"{n:g} epochs"


class ConsoleLogger(Callback):
    """Rank 0's console: the run header, then one line per epoch in every mode (with or without progress
    bars), e.g.::

        epoch 10/30  loss 3.412 (iou 1.52 obj 0.93 cls 0.96 l1 0)  lr 1.62e-03  48.7 img/s  5.3s  ETA 1m52s
            AP 0.412 AP50 0.771 (best 0.412 @10, eval 1.2s)
    """

    def on_run_start(self, run: Any) -> None:
        if run.is_main:
            for line in run.header():
                print(line, flush=True)

    def on_epoch_end(self, run: Any, stats: EpochStats) -> None:
        if not run.is_main:
            return
        width = len(str(stats.epochs))
        losses = dict(stats.losses)
        main = losses.pop("loss", None)
        parts = [f"epoch {stats.epoch + 1:>{width}}/{stats.epochs}"]
        if main is not None:
            terms = " ".join(f"{k.removesuffix('_loss')} {v:.3g}" for k, v in losses.items())
            parts.append(f"loss {main:.4g}" + (f" ({terms})" if terms else ""))
        parts += [f"{k} {v:.4g}" for k, v in stats.extra.items()]
        parts += [f"lr {stats.lr:.3g}", f"{stats.images_per_second:.1f} img/s", format_duration(stats.seconds),
                  f"ETA {format_duration(stats.eta_seconds)}"]
        line = "  ".join(parts)
        if stats.metrics:
            shown = " ".join(f"{k} {stats.metrics[k]:.4g}" for k in run.summary_metrics if k in stats.metrics)
            line += (f"  | {shown} (best {run.best_score:.4g} @{run.best_epoch}, "
                     f"eval {format_duration(stats.eval_seconds)})")
        print(line, flush=True)

    def on_run_end(self, run: Any, summary: dict[str, Any]) -> None:
        if run.is_main and run.stop_reason:
            print(f"stopped after epoch {summary['epoch']}: {run.stop_reason}", flush=True)


class ResultsLogger(Callback):
    """Rank 0: one ``results.csv`` row per epoch (the trainer's columns, ``run.results_row(stats)``). The whole
    file is rewritten atomically each time (a few hundred rows at most): a kill never truncates it."""

    def on_epoch_end(self, run: Any, stats: EpochStats) -> None:
        if run.is_main:
            header, row = run.results_row(stats)
            rows = _read_rows(run.csv_path) or [header]
            if rows[0] != header:  # resumed from a version that logged other columns: realign the earlier rows by name
                rows = [header] + [[dict(zip(rows[0], r)).get(k, "") for k in header] for r in rows[1:]]
            _write_rows(run.csv_path, rows + [row])


def trim_results_csv(path: Path, epochs: int) -> None:
    """Keep only the rows of the first ``epochs`` epochs (those a resumed checkpoint covers): a run killed
    after writing a row but before saving would otherwise repeat that epoch. Rewritten atomically: a kill here
    keeps every row."""
    rows = _read_rows(path)
    kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= epochs]
    if kept != rows:
        _write_rows(path, kept)


def _read_rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def _write_rows(path: Path, rows: list[list[Any]]) -> None:
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    atomic_write(path, text.getvalue())


class TensorBoardLogger(Callback):
    """Rank 0: ``train/<loss>`` and ``train/lr`` every 10 iterations and at the end of each epoch, ``val/<metric>``
    at each evaluation, into ``run.writer`` (opened by the run, which knows what a resume must purge)."""

    every = 10

    def on_batch_end(self, run: Any, batch: BatchStats) -> None:
        if run.writer is None or not (batch.index % self.every == 0 or batch.index + 1 == run.iters_per_epoch):
            return
        for key, value in batch.losses.items():
            run.writer.add_scalar(f"train/{key}", value, batch.iteration)
        run.writer.add_scalar("train/lr", batch.lr, batch.iteration)

    def on_eval_end(self, run: Any, epoch: int, metrics: dict[str, float]) -> None:
        if run.writer is not None:
            for key, value in metrics.items():
                if value != -1:  # COCOeval's "no objects of this size", not a score: no point on the curve
                    run.writer.add_scalar(f"val/{key}", value, run.iteration)
