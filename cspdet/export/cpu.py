"""Deprecated: the PyTorch CPU fast path moved to :mod:`cspdet.runtime.cpu`."""

from __future__ import annotations

from .._deprecated import moved

__all__: list[str] = []

__getattr__ = moved(__name__, dict.fromkeys(("FastCPUDetector", "native_bf16", "resolve_precision"),
                                            "cspdet.runtime.cpu"))
