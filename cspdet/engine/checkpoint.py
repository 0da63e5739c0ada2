"""Deprecated: checkpoint I/O moved to :mod:`cspdet.runtime.checkpoint` (the runtime owns every weights file)."""

from __future__ import annotations

from .._deprecated import moved

__all__: list[str] = []

__getattr__ = moved(__name__, dict.fromkeys(
    ("CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CheckpointError", "load_checkpoint", "load_state_file",
     "new_checkpoint", "save_checkpoint"), "cspdet.runtime.checkpoint"))
