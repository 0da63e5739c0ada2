"""The one training loop: the epoch loop (:meth:`TrainingLoop.fit`: evaluation when due, ``best.pt``, early stopping,
``last.pt``) and the iteration loop (:meth:`TrainingLoop._train_epoch`: lr of the step, forward, backward with
gradient accumulation and DDP's ``no_sync``, optimizer step, EMA), with the events callbacks hook into
(:mod:`cspdet.engine.callbacks`).

A task plugs in what differs: :meth:`TrainingLoop.train_step` (one batch's forward and loss),
:meth:`TrainingLoop.evaluate`, :meth:`TrainingLoop.on_epoch_begin` and its :class:`EpochMeter`. The loop runs on
the state a :class:`~cspdet.engine.run.TrainingRun` sets up (model, optimizer, schedule, EMA, loader, callbacks,
run directory, checkpoint writing), which is the class the detection and classification trainers derive from.
"""

from __future__ import annotations

import abc
import contextlib
import time
from typing import Any, Iterable

import torch
from torch import nn

from .callbacks import BatchStats, EpochStats
from .distributed import all_reduce_sum
from .ema import unwrap_model
from .optim import set_lr
from .rng import restore_rng_state

__all__ = ["EpochMeter", "TrainingLoop", "all_reduce_finite"]


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



class TrainingLoop(abc.ABC):
    """The loop of a training run (see the module docstring); :class:`~cspdet.engine.run.TrainingRun` provides the
    state it runs on (``model``, ``optimizer``, ``scaler``, ``autocast``, ``schedule``, ``ema``, ``train_loader``,
    ``callbacks``, ``run_dir``, the counters and the settings ``accumulate``, ``grad_clip``, ``save_interval``,
    ``patience``, ``eval_interval``, ``score_key``) and ``_save``."""

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
