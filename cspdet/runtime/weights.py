"""What kind of weights file is this? -- decided here, once, for every file cspdet reads -- and the detector a
cspdet checkpoint describes.

Kinds (:func:`weights_kind`):

==============  =====================================================================================
``cspdet``      a cspdet checkpoint, format version 1 or 2 (``kind`` detector or classifier inside)
``yolox``       an official YOLOX ``.pth`` (``{"model": state_dict}``, keys under ``backbone.backbone.``)
``timm``        a timm CspNet state dict (``stem.conv1.*``, ``stages.N.conv_*``): backbone weights only
``ultralytics`` an Ultralytics YOLOv8 / YOLO11 / YOLO26 ``.pt``, read by the restricted reader and converted
                (``obj`` is then the converted cspdet checkpoint; :mod:`cspdet.models.ultralytics_weights`)
*format name*   an exported file of a format in the table (:mod:`cspdet.runtime.formats`): ``onnx``,
                ``openvino``, ``torchscript`` and any registered one
==============  =====================================================================================

    >>> weights_kind("best.pt"), weights_kind("best.onnx"), weights_kind("yolox_s.pth")
    ('cspdet', 'onnx', 'yolox')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..models import Detector, DetectorMeta, DetectorSpec, SpecError, detector_spec
from .checkpoint import (CHECKPOINT_FORMAT, CheckpointError, is_ultralytics_state, load_checkpoint, load_state_file,
                         validate_checkpoint)
from ..models.ultralytics_weights import is_ultralytics_checkpoint
from .formats import deployed_format

__all__ = ["TORCH_KINDS", "WeightsFile", "checkpoint_meta", "detector_from_checkpoint", "read_weights",
           "recorded_dataset", "state_kind", "upgrade_v1", "weights_kind"]

#: Kinds of ``torch.save`` files (everything else is an exported format of the table).
TORCH_KINDS = ("cspdet", "yolox", "timm", "ultralytics")


@dataclass
class WeightsFile:
    """A weights file and what it is.

    Attributes:
        path: the file (for an OpenVINO folder: the folder as given).
        kind: see the module docstring; ``""`` for a ``torch.save`` file of no known kind.
        obj: the loaded content of a ``torch.save`` file (weights_only), None for an exported file.
    """

    path: Path
    kind: str
    obj: Any = None

    @property
    def exported(self) -> bool:
        """True for a file of the deploy-format table (run by a runtime backend)."""
        return self.kind not in TORCH_KINDS and self.kind != ""


def read_weights(path: str | os.PathLike) -> WeightsFile:
    """Tell what ``path`` is (an exported file by the format table, without reading it; a ``torch.save`` file
    loaded weights_only and recognised by its content) -- the one place that decides it.

    Raises:
        CheckpointError: a missing, unreadable or unsafe ``torch.save`` file (one line).
    """
    p = Path(path)
    fmt = deployed_format(p)
    if fmt is not None:
        return WeightsFile(p, fmt)
    # An Ultralytics .pt pickles its classes: it does not load weights_only and is recognised before torch.load;
    # load_state_file reads it with the restricted reader and returns it converted (a cspdet checkpoint dict).
    if is_ultralytics_checkpoint(p):
        return WeightsFile(p, "ultralytics", load_state_file(p))
    obj = load_state_file(p, convert=False)
    if is_ultralytics_state(obj):  # a plain state dict with Ultralytics' layer names: converted the same way
        return WeightsFile(p, "ultralytics", load_state_file(p))
    return WeightsFile(p, state_kind(obj), obj)


def weights_kind(path: str | os.PathLike) -> str:
    """The kind of a weights file (see the module docstring); ``""`` for a ``torch.save`` file of no known kind."""
    return read_weights(path).kind


def recorded_dataset(meta: Any) -> tuple[str | None, list[str]]:
    """The dataset a model's metadata records, found from here: ``(path that exists or None, paths tried)``.

    ``meta.dataset`` is the descriptor as the training command named it (often relative to where it ran);
    ``meta.dataset_path`` its absolute location at save time. The first that exists wins, so a checkpoint used from
    another folder still finds its dataset.
    """
    get = meta.get if isinstance(meta, dict) else (lambda key: getattr(meta, key, None))
    tried = [str(v) for v in (get("dataset"), get("dataset_path")) if v]
    found = next((t for t in tried if Path(t).exists()), None)
    return found, tried


def checkpoint_meta(ckpt: Any, path: str | os.PathLike) -> dict[str, Any]:
    """``meta`` of a loaded cspdet detector checkpoint, as data (version 1: rebuilt from its stored config).

    Raises:
        CheckpointError: not a cspdet detector checkpoint, or one without metadata.
    """
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("kind") != "detector":
        raise CheckpointError(f"{path}: not a cspdet detector checkpoint")
    meta = ckpt.get("meta") if ckpt.get("version", 1) >= 2 else upgrade_v1(ckpt, path)[1]
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: checkpoint has no meta entry")
    return meta


def state_kind(obj: Any) -> str:
    """What a loaded (``torch.load``-ed) weights file is: "cspdet", "yolox", "timm", or "" when it cannot tell.

    cspdet checkpoints carry ``format: cspdet``; YOLOX checkpoints are ``{"model": state_dict, ...}`` with keys
    under ``backbone.backbone.``; timm CspNet state dicts have ``stem.conv1.*`` and ``stages.N.conv_*`` keys.
    """
    if not isinstance(obj, dict):
        return ""
    if obj.get("format") == CHECKPOINT_FORMAT:
        return "cspdet"
    state = obj.get("model", obj.get("state_dict", obj))
    if not isinstance(state, dict):
        return ""
    keys = [k for k in state if isinstance(k, str)]
    if any(k.startswith(("backbone.backbone.", "module.backbone.backbone.")) for k in keys):
        return "yolox"
    if any(k.startswith("stem.conv1.") or ".conv_down." in k or ".conv_transition" in k for k in keys):
        return "timm"
    return ""



def detector_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                             ckpt: dict[str, Any] | None = None) -> tuple[Detector, dict[str, Any]]:
    """Rebuild a trained detector from a cspdet detector checkpoint: its spec, metadata and weights.

    ``ckpt``: the file's content when the caller has already read it (:func:`read_weights`), so it is not read twice.

    Returns:
        (detector in eval mode on ``device`` with ``detector.meta`` from the checkpoint, the checkpoint dict).
        No config file is needed and the run config stored in training checkpoints is not read.

    Raises:
        CheckpointError: not a cspdet detector checkpoint, a spec this cspdet cannot build, or weights that do
            not fit the model it describes.
    """
    ckpt = load_checkpoint(path, kind="detector") if ckpt is None else validate_checkpoint(ckpt, path, "detector")
    spec, meta = (ckpt.get("spec"), ckpt.get("meta")) if ckpt.get("version", 1) >= 2 else upgrade_v1(ckpt, path)
    weights = ckpt.get("model")
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: checkpoint entry 'model' must map parameter names to tensors")
    _check_spec_sizes(spec, len(weights), path)
    try:
        # The spec is data from the file: build its network on the meta device first (no memory, no
        # initialisation) and check that the weights fit, so that a damaged spec (2**31 channels) is a one-line
        # error instead of allocating and initialising an enormous network
        with torch.device("meta"):
            probe = Detector.from_spec(DetectorSpec.from_dict(spec, "spec"))
    except (SpecError, ValueError, TypeError, OverflowError, RuntimeError) as err:
        raise CheckpointError(f"{path}: cannot rebuild the model it describes: {_first(err)}") from None
    what = f"model {meta.get('preset') or 'of its spec'!r} with {probe.num_classes} classes" if isinstance(
        meta, dict) else f"its model with {probe.num_classes} classes"
    expected = probe.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match {what} (missing: {_short(missing)}; unexpected: "
                              f"{_short(unexpected)})")
    wrong = [k for k, v in expected.items() if tuple(weights[k].shape) != tuple(v.shape)]
    if wrong:
        k = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise CheckpointError(f"{path}: weights do not fit {what}: {k} has shape {tuple(weights[k].shape)}, the "
                              f"model needs {tuple(expected[k].shape)}{more}")
    del probe, expected
    model = Detector.from_spec(DetectorSpec.from_dict(spec, "spec"))
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:  # e.g. a tensor of a type that cannot be copied into a parameter
        raise CheckpointError(f"{path}: weights do not fit {what}: {_first(err)}") from None
    names = meta.get("class_names") if isinstance(meta, dict) else None
    if not isinstance(names, (list, tuple)) or len(names) != model.num_classes:
        n = len(names) if isinstance(names, (list, tuple)) else "no"
        raise CheckpointError(f"{path}: checkpoint has {n} class names for a model with {model.num_classes} classes")
    try:
        model.meta = DetectorMeta.from_dict(meta, "meta")
    except SpecError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return model.to(device).eval(), ckpt


# Larger than any network cspdet builds: a spec integer beyond it is damage, not a model (and would make the
# meta-device build in detector_from_checkpoint loop for hours over 2**31 blocks).
MAX_SPEC_INT = 1 << 16


def _check_spec_sizes(spec: Any, num_weights: int, path: str | os.PathLike) -> None:
    """Refuse spec integers no real network has: any count or width above MAX_SPEC_INT, and block counts
    (``num_blocks``) above the number of weight tensors (every block has some)."""
    stack: list[tuple[str, Any]] = [("spec", spec)]
    seen: set[int] = set()  # a pickle may share one container many times over: visit each once
    while stack:
        where, value = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if id(value) in seen:
                continue
            seen.add(id(value))
        if isinstance(value, dict):
            stack += [(f"{where}.{k}", v) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            stack += [(f"{where}[{i}]", v) for i, v in enumerate(value)]
        elif isinstance(value, int) and not isinstance(value, bool):
            limit = num_weights if where.endswith("num_blocks") else MAX_SPEC_INT
            if abs(value) > limit:
                raise CheckpointError(f"{path}: {where} = {value} is out of range (at most {limit} for these "
                                      "weights); the checkpoint is damaged")


def upgrade_v1(ckpt: dict[str, Any], path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Spec and meta of a version-1 checkpoint, rebuilt from its ``config["model"]``, class names and sizes.

    Only the model keys of the stored config are read (as plain data), never the whole training config.
    """
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    if "name" not in model:
        raise CheckpointError(f"{path}: version-1 checkpoint without config.model.name; cannot tell its model")
    overrides = {k: model.get(k) for k in ("depth", "width", "depthwise", "act", "stem_channels", "stage_defs")}
    try:
        spec = detector_spec(model["name"], int(model.get("num_classes", 80)), **overrides)
    except (SpecError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: cannot rebuild the model of this version-1 checkpoint: {err}") from None
    names = ckpt.get("class_names")
    if not isinstance(names, (list, tuple)):
        raise CheckpointError(f"{path}: checkpoint has no class names for a model with {spec.num_classes} classes")

    def size(section: str) -> Any:
        value = (config.get(section) or {}).get("img_size") if isinstance(config.get(section), dict) else None
        return list(value) if isinstance(value, (list, tuple)) else None

    meta = {"class_names": list(names), "category_ids": ckpt.get("category_ids"),
            "img_size": size("eval") or [640, 640], "train_img_size": size("data"), "strides": list(spec.head.strides),
            "preset": model["name"], "source": ckpt.get("source"),
            "dataset": (config.get("data") or {}).get("dataset") if isinstance(config.get("data"), dict) else None}
    return spec.to_dict(), meta


def _first(err: Exception, limit: int = 300) -> str:
    """``err`` on one line, cut at a word boundary (torch's size-mismatch reports can run for pages)."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def _short(keys: list[str], n: int = 5) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
