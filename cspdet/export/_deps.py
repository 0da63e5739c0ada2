"""Deprecated: the export errors and ``require`` moved to :mod:`cspdet.runtime.errors`."""

from __future__ import annotations

from .._deprecated import moved

__all__: list[str] = []

__getattr__ = moved(__name__, dict.fromkeys(("ExportError", "ExportUsageError", "MissingExtraError", "require"),
                                            "cspdet.runtime.errors"))
