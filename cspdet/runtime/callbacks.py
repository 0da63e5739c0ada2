"""Callbacks: the events of training, evaluation, prediction and export, and the list that fires them.

A callback is any object with some of the hooks below (subclassing :class:`Callback` is optional). The first
argument of every hook is the object that fires it; ``epoch`` is 0-based::

    training (a TrainingRun: cspdet.engine.trainer.Trainer, cspdet.engine.classify.ClassifierTrainer)
    on_run_start(run)                              once, when fit() starts (also after --resume)
    on_epoch_start(run, epoch)                     before the epoch
    on_batch_start(run, epoch, index, batch)       before the step on loader batch ``index``
    on_batch_end(run, batch: BatchStats)           after every training iteration
    on_eval_end(run, epoch, metrics)               after the run's evaluation (best score and best.pt updated)
    on_epoch_end(run, stats: EpochStats)           after the epoch (and its evaluation), before last.pt is saved
    on_run_end(run, summary)                       once, when fit() returns

    evaluation (cspdet.engine.evaluator.COCOEvaluator: ``cspdet val``, and a detection run's evaluations)
    on_val_end(evaluator, metrics: COCOMetrics)    after a COCO evaluation, on every process

    prediction (cspdet.runtime.predictor.Predictor)
    on_predict_batch_end(predictor, results)       after each forward pass, with its list of Results

    export (cspdet.export.exporters.export_detector / export_model: ``cspdet export``)
    on_export_end(model, result: ExportResult)     after the file is written

Each of those takes ``callbacks=[...]`` (a training run: ``run.callbacks.append(...)`` before ``fit()``; its
evaluator shares the run's list, so a logger added to a run also sees ``on_val_end``). Exceptions raised by a
hook propagate like any error of the operation.

This module is the runtime's (prediction fires events, and the runtime imports nothing above it); the training
loggers built on it live in :mod:`cspdet.engine.callbacks`, which re-exports these names.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EVENTS", "Callback", "CallbackList"]

#: every hook name, in the order of the module docstring
EVENTS = ("on_run_start", "on_epoch_start", "on_batch_start", "on_batch_end", "on_eval_end", "on_epoch_end",
          "on_run_end", "on_val_end", "on_predict_batch_end", "on_export_end")


class Callback:
    """Base class with every hook as a no-op (subclassing is optional: any object with some hooks works)."""

    def on_run_start(self, run: Any) -> None:
        pass

    def on_epoch_start(self, run: Any, epoch: int) -> None:
        pass

    def on_batch_start(self, run: Any, epoch: int, index: int, batch: Any) -> None:
        """Before the step on loader batch ``index`` (as the loader yields it; detection: a dict with ``images``
        (B, 3, H, W) uint8, ``targets``, ...; classification: ``(images, labels)``)."""

    def on_batch_end(self, run: Any, batch: Any) -> None:
        pass

    def on_eval_end(self, run: Any, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, run: Any, stats: Any) -> None:
        pass

    def on_run_end(self, run: Any, summary: dict[str, Any]) -> None:
        pass

    def on_val_end(self, evaluator: Any, metrics: Any) -> None:
        """After a COCO evaluation: ``metrics`` is its ``COCOMetrics`` (``metrics.stats``: AP, AP50, ...)."""

    def on_predict_batch_end(self, predictor: Any, results: list[Any]) -> None:
        """After one forward pass of a ``Predictor``: one ``Results`` per image of the batch, in input order."""

    def on_export_end(self, model: Any, result: Any) -> None:
        """After an export: ``model`` the exported detector, ``result`` the ``ExportResult`` (path, format, ...)."""


class CallbackList(list):
    """Callbacks in call order; ``fire(hook, source, ...)`` calls ``hook`` on each that has it."""

    def fire(self, hook: str, source: Any, *args: Any) -> None:
        for callback in list(self):
            method = getattr(callback, hook, None)
            if method is not None:
                method(source, *args)

    @classmethod
    def of(cls, callbacks: Any) -> CallbackList:
        """``callbacks`` itself when it is a :class:`CallbackList` (shared, so later additions count), else a new
        list of its items (``None``: empty)."""
        return callbacks if isinstance(callbacks, CallbackList) else cls(callbacks or [])
