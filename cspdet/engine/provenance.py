"""Where a model's weights came from: the ``meta.source`` record of every checkpoint cspdet writes.

A record is plain data (it lives in checkpoint metadata and exported files)::

    {"path": "yolox_s.pth", "format": "yolox", "sha256": "9f3c...", "licence": "Apache-2.0",
     "parent": <the source file's own meta.source, when it is a cspdet checkpoint that has one>,
     "trained_in": "runs/train/exp"}          # only in checkpoints a training run wrote

Weights keep the licence of the weights they were trained or converted from, whatever the licence of the code
that handles them: YOLOX's published weights are Apache-2.0, Ultralytics' are AGPL-3.0 (or its Enterprise
licence), cspdet's own Apache-2.0. A cspdet checkpoint passes on the licence its own record names, so a model
fine-tuned from converted Ultralytics weights still says AGPL-3.0. ``licence: null`` = no upstream weights (a
model trained from random initialisation: its weights are its trainer's).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

__all__ = ["LICENCES", "file_sha256", "weights_source"]

#: Licence of weights by the format they were read from (README, "Licence of weights").
LICENCES: dict[str, str] = {
    "cspdet": "Apache-2.0",
    "yolox": "Apache-2.0",
    "timm": "Apache-2.0",  # timm's CspNet ImageNet weights (its model cards); check the card of the file you use
    "ultralytics": "AGPL-3.0 (or an Ultralytics Enterprise licence)",
}


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk``-byte pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_source(path: str | os.PathLike | None, fmt: str, parent: Any = None) -> dict[str, Any]:
    """The ``meta.source`` record of weights read from ``path`` in format ``fmt`` (see the module docstring).

    Args:
        path: the weights file; None = no file (``fmt`` "scratch": random initialisation).
        fmt: "cspdet", "yolox", "timm", "ultralytics" or "scratch".
        parent: the file's own ``meta.source`` when it is a cspdet checkpoint (a dict, or the plain string older
            checkpoints hold); a licence it names is passed on (none named: the format's, :data:`LICENCES`).
    """
    if path is None:
        return {"path": None, "format": fmt, "sha256": None, "licence": None}
    licence = LICENCES.get(fmt)
    if isinstance(parent, dict) and parent.get("licence"):
        licence = parent["licence"]  # fine-tuned or converted weights keep their origin's licence
    record = {"path": os.fspath(path), "format": fmt, "sha256": file_sha256(path), "licence": licence}
    if parent is not None:
        record["parent"] = parent
    return record
