"""The runtime: every weights file cspdet reads, opened in one place, and the inference API around it.

    from cspdet.runtime import open_model, weights_kind, Predictor, InferenceModel

* :func:`weights_kind` / :func:`read_weights` (:mod:`.weights`): what a file is -- a cspdet checkpoint (v1 / v2),
  official YOLOX or timm weights, or an exported file of a format in the table (:mod:`.formats`: ONNX, OpenVINO,
  TorchScript and any :func:`register_format`-ed one). The only place that decides it.
* :func:`open_model` (:mod:`.open`): any runnable file -> an :class:`InferenceModel` (:mod:`.contracts`): the
  rebuilt :class:`cspdet.models.Detector` (optionally :class:`FastCPUDetector`, :mod:`.cpu`) or a
  :class:`DeployedDetector` over a runtime backend (:mod:`.backends`).
* :class:`Predictor` / :class:`Results` (:mod:`.predictor`): images and videos in, boxes in original pixels out.
* checkpoint file I/O (:mod:`.checkpoint`), the exported files' metadata (:mod:`.metadata`), device selection.
* :class:`Callback` / :class:`CallbackList` (:mod:`.callbacks`): the events of training, evaluation, prediction
  and export, and the list that fires them.

Layering: the runtime imports models, data, det and config, never engine, export or cli (``tests/test_imports.py``).
Submodules load on first use, so ``import cspdet.runtime`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends import Backend, DeployedDetector  # noqa: F401 (re-exported lazily)
    from .callbacks import Callback, CallbackList  # noqa: F401 (re-exported lazily)
    from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: F401 (re-exported lazily)
    from .contracts import InferenceModel  # noqa: F401 (re-exported lazily)
    from .cpu import FastCPUDetector  # noqa: F401 (re-exported lazily)
    from .errors import ExportError, ExportUsageError, MissingExtraError  # noqa: F401 (re-exported lazily)
    from .formats import BenchVariant, DeployFormat, deploy_formats, deployed_format, get_format, register_format  # noqa: F401 (re-exported lazily)
    from .open import NotAModelError, load_backend, open_model  # noqa: F401 (re-exported lazily)
    from .predictor import Predictor, Results  # noqa: F401 (re-exported lazily)
    from .weights import WeightsFile, detector_from_checkpoint, read_weights, weights_kind  # noqa: F401 (re-exported lazily)

_LAZY = {
    "Backend": "backends", "DeployedDetector": "backends",
    "Callback": "callbacks", "CallbackList": "callbacks",
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "InferenceModel": "contracts",
    "FastCPUDetector": "cpu",
    "ExportError": "errors", "ExportUsageError": "errors", "MissingExtraError": "errors",
    "BenchVariant": "formats", "DeployFormat": "formats", "deploy_formats": "formats", "deployed_format": "formats",
    "get_format": "formats", "register_format": "formats",
    "NotAModelError": "open", "load_backend": "open", "open_model": "open",
    "Predictor": "predictor", "Results": "predictor",
    "WeightsFile": "weights", "detector_from_checkpoint": "weights", "read_weights": "weights",
    "weights_kind": "weights",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
