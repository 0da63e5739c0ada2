"""``open_model``: any weights file cspdet runs -> an inference model (the one loader of the project).

    >>> model = open_model("best.pt")                  # or best.onnx, best.xml, an OpenVINO folder, best.torchscript
    >>> model.predict(images)                          # list of {"boxes", "scores", "labels"}

What the file is comes from :func:`cspdet.runtime.weights.read_weights`; an exported file is run by the backend its
format's record names (:mod:`cspdet.runtime.formats`), a cspdet checkpoint is rebuilt from its spec and weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..models import fuse_conv_bn
from .backends import Backend, DeployedDetector
from .checkpoint import CheckpointError
from .contracts import InferenceModel
from .cpu import FastCPUDetector
from .errors import ExportError
from .formats import deploy_formats, deployed_format, get_format
from .weights import WeightsFile, detector_from_checkpoint, read_weights

__all__ = ["NotAModelError", "load_backend", "open_model"]


class NotAModelError(CheckpointError):
    """A weights file cspdet recognises that is not a runnable detector (``kind``: ``yolox`` or ``timm``); the
    message says what to do with it. (An Ultralytics ``.pt`` runs: it is converted as it is read.)"""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


_NOT_A_MODEL = {
    "yolox": "an official YOLOX checkpoint: convert it with `cspdet convert {path} --out converted.pt` (or "
             "evaluate it with a config naming its model)",
    "timm": "timm backbone weights: use them to initialise training (model.weights={path})",
}


def load_backend(path: str | os.PathLike, device: str | torch.device = "cpu", threads: int | None = None,
                 precision: str = "fp32") -> Backend:
    """The runtime backend of an exported file (its format's loader); ``precision`` applies to OpenVINO (see
    :class:`~cspdet.runtime.backends.OpenVINOBackend`).

    Raises:
        ExportError: missing file, unknown suffix, a file that does not load (corrupt, truncated), a file without
            cspdet metadata (another model family), or a missing extra -- one line each.
    """
    p = Path(path)
    name = deployed_format(p)
    if name is None:
        suffixes = ", ".join(f.suffix for f in deploy_formats())
        raise ExportError(f"{p}: not an exported model (expected {suffixes})")
    fmt = get_format(name)
    if fmt.resolve is not None:
        p = fmt.resolve(p)
    if not p.is_file():
        raise ExportError(f"{p}: file not found")
    if p.stat().st_size == 0:
        raise ExportError(f"{p}: empty file (an interrupted copy or export?)")
    try:
        return fmt.loader(p, device=device, threads=threads, precision=precision)
    except ValueError as err:  # parse_info: no / bad metadata
        raise ExportError(str(err)) from None


def open_model(path: str | os.PathLike | WeightsFile, device: str | torch.device = "cpu", fuse: bool = True,
               threads: int | None = None, precision: str = "fp32", channels_last: bool = False) -> InferenceModel:
    """The model of any weights file cspdet runs, in eval mode: a cspdet detector checkpoint (the rebuilt
    :class:`cspdet.models.Detector`, Conv+BN fused when ``fuse``) or an exported file (a
    :class:`~cspdet.runtime.backends.DeployedDetector` over its format's runtime). Every result satisfies
    :class:`~cspdet.runtime.contracts.InferenceModel`.

    An Ultralytics YOLOv8 / YOLO11 / YOLO26 ``.pt`` is read by the restricted reader and converted as it is opened
    (``cspdet convert`` writes the converted checkpoint once, for a faster start).

    ``precision`` (``fp32`` | ``bf16`` | ``auto``: bf16 only on CPUs with native bf16) and ``channels_last``
    select the PyTorch CPU fast path for checkpoints (:class:`~cspdet.runtime.cpu.FastCPUDetector`); ``precision``
    also sets OpenVINO's inference precision for ``.xml`` files (ONNX Runtime and TorchScript files run in the
    precision they were exported in). fp32 without channels_last (the default) keeps results identical to the
    training code's. ``threads``: intra-op threads of an exported file's runtime.

    Raises:
        CheckpointError (ExportError for exported files; :class:`NotAModelError` for YOLOX / timm weights): one
            line naming the file and the problem.
    """
    weights = path if isinstance(path, WeightsFile) else read_weights(path)
    if weights.exported:
        fmt = get_format(weights.kind)
        if torch.device(device).type not in fmt.devices:
            raise ExportError(f"{weights.path}: the {fmt.runtime or fmt.name} backend runs on "
                              f"{' / '.join(fmt.devices)} here; pass device cpu")
        return DeployedDetector(load_backend(weights.path, device, threads, precision)).eval()
    if weights.kind in _NOT_A_MODEL:
        raise NotAModelError(f"{weights.path}: not a cspdet checkpoint: "
                             + _NOT_A_MODEL[weights.kind].format(path=weights.path), weights.kind)
    model, _ = detector_from_checkpoint(weights.path, device=device, ckpt=weights.obj)
    if fuse:
        fuse_conv_bn(model)
    if (precision != "fp32" or channels_last) and torch.device(device).type == "cpu":
        return FastCPUDetector(model, precision, channels_last)
    return model
