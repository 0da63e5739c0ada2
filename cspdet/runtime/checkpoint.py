"""Checkpoint files: the layout, atomic writes and safe loads.

A checkpoint is a plain dict of tensors, numbers, strings and containers, so it loads with
``torch.load(..., weights_only=True)`` (no pickled code runs). Writes go to a temporary file in the same
directory, are fsync'ed, then renamed over the target (:func:`cspdet.fileio.atomic_write`): a crash or
``kill -9`` mid-save leaves the previous checkpoint intact, and a full disk is a one-line
:class:`cspdet.fileio.OutputError`.

Layout, format version 2 (what a model needs first, provenance last)::

    format   "cspdet"
    version  2
    kind     "detector" | "classifier"
    spec     the network as data: DetectorSpec.to_dict() / BackboneSpec.to_dict()  (cspdet.models.spec)
    meta     DetectorMeta.to_dict(): class names, category ids, input size, channel order, pixel range,
             strides, default conf / IoU / max_det, preset, source   (a classifier: class_names, img_size)
    model    state dict of the weights to use (the EMA weights when EMA is on)
    -- training checkpoints only --
    epoch, metrics, best_ap | best_top1
    config   the resolved run config (provenance; read only by --resume)
    trainer  optimizer, scaler, schedule, iteration, per-rank RNG states, raw weights under EMA

Everything that only uses a model (Predictor, eval, detect, convert) reads ``spec`` + ``meta`` + ``model``
(:func:`cspdet.runtime.detector_from_checkpoint`), never ``config``. Version 1 files (no ``spec`` /
``meta``; class names at the top level and the model in ``config["model"]``) still load: the reader rebuilds
their spec and meta from those entries.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write
from ..models.ultralytics_weights import UltralyticsWeightsError, convert_ultralytics, is_ultralytics_checkpoint

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CheckpointError", "load_checkpoint", "is_torch_file",
    "load_state_file", "new_checkpoint", "save_checkpoint", "validate_checkpoint",
]

CHECKPOINT_FORMAT = "cspdet"
#: The layout written now (see the module docstring); 1 = cspdet 0.1's layout, still read.
CHECKPOINT_VERSION = 2


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or is not what the caller needs; the message says why."""


def new_checkpoint(kind: str, spec: dict[str, Any], meta: dict[str, Any], weights: dict[str, Any],
                   **extra: Any) -> dict[str, Any]:
    """A version-2 checkpoint dict (see the module docstring); ``extra`` adds training entries."""
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": kind, "spec": spec, "meta": meta,
            "model": weights, **extra}


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
    return validate_checkpoint(load_state_file(path, map_location), path, kind)


def validate_checkpoint(obj: Any, path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """``obj`` (a loaded file) when it is a cspdet checkpoint of a version this cspdet reads (of ``kind`` when
    given); raises :class:`CheckpointError` naming ``path`` otherwise."""
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a cspdet checkpoint (no 'format: {CHECKPOINT_FORMAT}' entry); "
            "for YOLOX or timm weights set model.weights with model.weights_format=yolox|timm"
        )
    version = obj.get("version", 1)
    if not isinstance(version, int) or not 1 <= version <= CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not supported by this cspdet "
                              f"(it reads versions 1..{CHECKPOINT_VERSION}); upgrade cspdet")
    if kind is not None and obj.get("kind") != kind:
        raise CheckpointError(f"{path}: is a cspdet {obj.get('kind')} checkpoint, expected a {kind} checkpoint")
    return obj


def is_torch_file(path: str | os.PathLike) -> bool:
    """True for a file that ``torch.save`` could have written (judged by its first bytes, nothing is unpickled)."""
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip archive (or, before torch 1.6, a pickle stream starting with the PROTO opcode).
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def load_state_file(path: str | os.PathLike, map_location: str | torch.device = "cpu", convert: bool = True) -> Any:
    """``torch.load`` with ``weights_only=True`` and one-line errors (for any weights file, ours or not).

    An Ultralytics YOLOv8 / YOLO11 / YOLO26 detection checkpoint (a pickle of its classes, which ``weights_only``
    refuses) is read with cspdet's restricted reader and returned converted, as a version-2 cspdet checkpoint
    dict (:func:`_foreign_checkpoint`), so every command that takes weights takes it; a pickle that names anything
    else is refused with one line naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if not is_torch_file(path):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint file (expected a torch.save archive)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        converted = _foreign_checkpoint(path)
        if converted is not None:
            return converted
        named = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"it names {named.group(1)}, " if named else "the file holds objects other than tensors, numbers, " \
            "strings and plain containers, "
        raise CheckpointError(
            f"{path}: refused: {what}and loading it could run code (cspdet only loads weights_only checkpoints)"
        ) from None
    except Exception as err:  # truncated or corrupt archives: RuntimeError, EOFError, ...
        reason = " ".join(str(err).split())
        reason = reason if len(reason) <= 200 else reason[:200].rsplit(" ", 1)[0] + " ..."
        raise CheckpointError(f"{path}: cannot read the checkpoint: {reason}") from None
    if convert and is_ultralytics_state(obj):
        return _foreign_checkpoint(path, plain_state=True)  # a plain state dict with Ultralytics' names
    return obj


def is_ultralytics_state(obj: Any) -> bool:
    """A plain state dict with Ultralytics' layer names (``model.0.conv.weight``), not a cspdet checkpoint."""
    return isinstance(obj, dict) and obj.get("format") != CHECKPOINT_FORMAT and any(
        isinstance(k, str) and k.startswith("model.0.conv.") for k in obj)


def _foreign_checkpoint(path: Path, plain_state: bool = False) -> dict[str, Any] | None:
    """The one place where weights of other frameworks are recognised and converted: an Ultralytics detection
    checkpoint (or, ``plain_state``, a state dict with its names) comes back as a cspdet checkpoint dict
    (:func:`cspdet.models.ultralytics_weights.convert_ultralytics`, memoised for the last file); any other file
    gives None.

    Raises:
        CheckpointError: an Ultralytics file that is refused (it names something a weights file does not need) or
            that does not convert (one line).
    """
    if not plain_state and not is_ultralytics_checkpoint(path):
        return None
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if _CONVERTED.get("key") != key:
        try:
            ckpt = convert_ultralytics(path)
        except UltralyticsWeightsError as err:
            raise CheckpointError(str(err)) from None
        _CONVERTED.update(key=key, ckpt=ckpt)
    return _CONVERTED["ckpt"]


_CONVERTED: dict[str, Any] = {}
