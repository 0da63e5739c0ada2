"""Training, evaluation, inference and checkpoint I/O.

The main API, importable from here::

    from cspdet.engine import Trainer, ClassifierTrainer, COCOEvaluator, build_detector
    from cspdet.engine import Callback, EpochStats      # events of a training run (trainer.callbacks)

Checkpoint I/O is imported at once; everything else loads on first use, so ``import cspdet.engine`` does
not pull in the models, pycocotools, OpenCV or TensorBoard until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._deprecated import moved
from ..runtime.checkpoint import CheckpointError, load_checkpoint, load_state_file, save_checkpoint

if TYPE_CHECKING:
    from .build import build_detector  # noqa: F401 (re-exported lazily)
    from .callbacks import BatchStats, Callback, EpochStats  # noqa: F401 (re-exported lazily)
    from .classify import ClassifierTrainer, build_classifier  # noqa: F401 (re-exported lazily)
    from .coco_metrics import EvaluationError  # noqa: F401 (re-exported lazily)
    from .evaluator import COCOEvaluator  # noqa: F401 (re-exported lazily)
    from .run import NonFiniteLossError, ResumeError, RunBusyError, RunFinished  # noqa: F401 (re-exported lazily)
    from .trainer import Trainer  # noqa: F401 (re-exported lazily)

# name -> submodule that defines it (imported on first attribute access)
_LAZY = {
    "Trainer": "trainer",
    "ClassifierTrainer": "classify",
    "build_classifier": "classify",
    "COCOEvaluator": "evaluator",
    "EvaluationError": "coco_metrics",
    "build_detector": "build",
    "NonFiniteLossError": "run",
    "ResumeError": "run",
    "RunFinished": "run",
    "RunBusyError": "run",
    "Callback": "callbacks",
    "BatchStats": "callbacks",
    "EpochStats": "callbacks",
}

__all__ = ["CheckpointError", "load_checkpoint", "load_state_file", "save_checkpoint", *_LAZY]

# moved to the runtime, which owns loading and inference (old imports work for one release, with a warning)
_moved = moved(__name__, {"Predictor": "cspdet.runtime.predictor", "Results": "cspdet.runtime.predictor",
                          "detector_from_checkpoint": "cspdet.runtime.weights"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    if name in ("Predictor", "Results", "detector_from_checkpoint"):
        return _moved(name)
    # AttributeError (not ImportError) lets ``from cspdet.engine import <submodule>`` fall back to importing it.
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
