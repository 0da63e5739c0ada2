"""Checkpoint files: atomic writes and safe loads.

A checkpoint is a plain dict of tensors, numbers, strings and containers, so it loads with
``torch.load(..., weights_only=True)`` (no pickled code runs). Writes go to a temporary file in the same
directory, are fsync'ed, then renamed over the target (:func:`cspdet.fileio.atomic_write`): a crash or
``kill -9`` mid-save leaves the previous checkpoint intact, and a full disk is a one-line :class:`cspdet.fileio.OutputError`.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "load_checkpoint", "load_state_file", "save_checkpoint"]

CHECKPOINT_FORMAT = "cspdet"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or is not what the caller needs; the message says why."""


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``obj`` to ``path`` atomically (temp file in the same dir, fsync, rename, fsync dir).

    Raises:
        OutputError: disk full, read-only file system, ...; the previous ``path`` is intact (one-line message).
    """
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", kind: str | None = None
) -> dict[str, Any]:
    """Load a cspdet checkpoint safely (``weights_only=True``).

    Args:
        path: a file written by :func:`save_checkpoint` through the trainer.
        map_location: device for the tensors.
        kind: when given ("detector" or "classifier"), the checkpoint must be of that kind.

    Raises:
        CheckpointError: missing file, unreadable or unsafe file, or not a cspdet checkpoint (of ``kind``).
    """
    ckpt = load_state_file(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a cspdet checkpoint (no 'format: {CHECKPOINT_FORMAT}' entry); "
            "for YOLOX or timm weights set model.weights with model.weights_format=yolox|timm"
        )
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"{path}: is a cspdet {ckpt.get('kind')} checkpoint, expected a {kind} checkpoint")
    return ckpt


def load_state_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` and one-line errors (for any weights file, ours or not)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip archive (or, before torch 1.6, a pickle stream starting with the PROTO opcode).
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint file (expected a torch.save archive)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused: the file holds objects other than tensors, numbers, strings and plain containers, "
            "and loading it could run code (cspdet only loads weights_only checkpoints)"
        ) from None
    except Exception as err:  # truncated or corrupt archives: RuntimeError, EOFError, ...
        reason = " ".join(str(err).split())
        reason = reason if len(reason) <= 200 else reason[:200].rsplit(" ", 1)[0] + " ..."
        raise CheckpointError(f"{path}: cannot read the checkpoint: {reason}") from None
