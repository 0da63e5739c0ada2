"""Errors of exported files, and the optional runtime dependencies of export and of the deployed backends,
imported lazily with a one-line error."""

from __future__ import annotations

import importlib
from types import ModuleType

from .checkpoint import CheckpointError

__all__ = ["ExportError", "ExportUsageError", "MissingExtraError", "require"]

# module -> what pip installs it
_PACKAGES = {"onnx": "onnx", "onnxruntime": "onnxruntime", "onnxsim": "onnxsim", "openvino": "openvino",
             "nncf": "nncf", "onnxruntime.quantization": "onnxruntime"}


class ExportError(CheckpointError):
    """An export that cannot be written, or an exported file that cannot be used; ``str(err)`` is one line.

    A :class:`~cspdet.runtime.checkpoint.CheckpointError`, so every tool that reports a bad checkpoint in one line
    reports a bad exported file the same way.
    """


class ExportUsageError(ExportError, ValueError):
    """An exported file asked to do what it was not exported for (another input size, the other NMS mode): both a
    ``ValueError`` (a bad argument) and an :class:`ExportError` (so the tools report it in one line)."""


class MissingExtraError(ExportError):
    """An optional dependency (the ``export`` extra) is not installed."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra, e.g.
    ``onnxruntime is not installed (needed to run .onnx models): pip install 'cspdet[export]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = _PACKAGES.get(module, module.split(".")[0])
        message = f"{package} is not installed (needed {purpose}): pip install 'cspdet[export]'"
        raise MissingExtraError(message) from None
