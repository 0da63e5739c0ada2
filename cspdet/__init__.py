"""cspdet: a clear, fast, hackable cross-stage-partial (CSP) detector in the YOLO family."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Predictor", "Results", "__version__"]

if TYPE_CHECKING:
    from .runtime.predictor import Predictor, Results

# `import cspdet` stays cheap (no torch / OpenCV import) until the inference API is used.
_LAZY = {"Predictor": "cspdet.runtime.predictor", "Results": "cspdet.runtime.predictor"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cspdet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
