"""Deprecated: ``Predictor`` and ``Results`` moved to :mod:`cspdet.runtime.predictor` (``from cspdet import
Predictor`` is the stable spelling)."""

from __future__ import annotations

from .._deprecated import moved

__all__: list[str] = []

__getattr__ = moved(__name__, dict.fromkeys(
    ("ImageLike", "Predictor", "Results", "VIDEO_SUFFIXES", "expand_source", "is_video"), "cspdet.runtime.predictor"))
