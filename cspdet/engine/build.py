"""Turn configs and checkpoints into models: the one place that maps ``ModelConfig`` onto ``cspdet.models``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import ConfigError, ModelConfig
from .._deprecated import moved
from ..runtime.checkpoint import CheckpointError, load_checkpoint
from ..runtime.weights import read_weights

__all__ = ["InitialWeights", "build_detector", "convert_yolox_checkpoint", "init_weights", "load_initial_weights",
           "model_overrides"]

# moved to the runtime, which owns loading (old imports keep working for one release, with a warning)
__getattr__ = moved(__name__, {"detector_from_checkpoint": "cspdet.runtime.weights",
                               "detect_weights_format": "cspdet.runtime.weights:state_kind"})


def model_overrides(cfg: ModelConfig) -> dict[str, Any]:
    """Keyword overrides for ``create_detector`` from the optional fields of ``cfg`` (None = preset default).

    ``head_options`` is either the head's own options (``{o2o_detach: false}``) or, keyed by head kind
    (``{tal: {...}, yolox: {...}}``), options for whichever head the model has: a recipe such as ``small_scratch``
    sets the task-aligned head's and still trains a YOLOX model (``model.name=cspdarknet_nano``) unchanged."""
    from ..models import HEADS, detector_spec

    keys = ("depth", "width", "depthwise", "act", "stem_channels", "stage_defs")
    overrides = {k: getattr(cfg, k) for k in keys if getattr(cfg, k) is not None}
    options = cfg.head_options
    if options and all(k in HEADS for k in options):
        kind = detector_spec(cfg.name, cfg.num_classes, **overrides).head.kind
        options = options.get(kind)
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"model.head_options.{kind}: expected a mapping of {kind} head options, got {options!r}")
    if options:
        overrides["head_options"] = options
    return overrides


def build_detector(cfg: ModelConfig):
    """Build the (randomly initialised) detector described by ``cfg``.

    Returns:
        ``cspdet.models.Detector`` with ``cfg.num_classes`` classes.
    """
    from ..models import create_detector

    try:
        return create_detector(cfg.name, num_classes=cfg.num_classes, **model_overrides(cfg))
    except (KeyError, ValueError, TypeError, OverflowError, RuntimeError) as err:  # e.g. model.width=1e30
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__  # torch appends
        if cfg.head_options and "head_options" in reason:  # flat options meant for another head
            reason += (f"; model.head_options {cfg.head_options} are for another head: key them by head kind "
                       f"({{tal: {{...}}}}) or set model.head_options=null")
        raise ConfigError(f"model: cannot build {cfg.name!r}: {reason[:300]}") from None  # its C++ stack


def _short(keys: list[str], n: int = 5) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


# ------------------------------------------------------------------------------------ initial weights


@dataclass
class InitialWeights:
    """What :func:`load_initial_weights` did.

    Attributes:
        report: the log block: what was loaded from where, and every tensor that kept its fresh initialisation.
        source: the ``meta.source`` record of the file (:func:`cspdet.engine.provenance.weights_source`).
        reinitialised: model keys left at their fresh initialisation (the head's class layers when the number of
            classes differs; everything outside the backbone for backbone weights).
    """

    report: str
    source: dict[str, Any]
    reinitialised: list[str] = field(default_factory=list)


def init_weights(model: torch.nn.Module, cfg: ModelConfig, allow_class_change: bool = True) -> str:
    """Initialise a freshly built detector from ``cfg.weights``; returns the report (see
    :func:`load_initial_weights`)."""
    if not cfg.weights:
        return ""
    return load_initial_weights(model, cfg, allow_class_change).report


def load_initial_weights(model: torch.nn.Module, cfg: ModelConfig, allow_class_change: bool = True
                         ) -> InitialWeights:
    """Initialise a freshly built detector from ``cfg.weights`` (format ``cfg.weights_format`` or detected).

    * cspdet **classifier** checkpoint (``cspdet pretrain``): its CSPNet ``stem.*`` / ``stages.*`` tensors
      go to ``model.backbone`` (all backbone tensors must be present with equal shapes; ``head.*`` is dropped).
    * cspdet **detector** checkpoint, **YOLOX** checkpoint (``{"model": ...}`` or a bare state dict), or
      **Ultralytics** ``.pt``: all tensors, read into cspdet's layout. When the number of classes differs (and
      ``allow_class_change``), the head tensors whose shape depends on it keep their fresh initialisation and
      the report lists them by name; every other tensor must fit exactly.
    * **timm** ``cspresnet50`` / ``cspresnext50`` / ``cspdarknet53`` state dict: into ``model.backbone``
      via :func:`cspdet.models.load_timm_weights` (a ``{"state_dict": ...}`` wrapper is accepted).

    Returns:
        :class:`InitialWeights`: the report, the ``meta.source`` record, the re-initialised keys.

    Raises:
        CheckpointError: unreadable file, unknown format, or weights that do not fit (the message lists keys).
    """
    from .provenance import weights_source

    path = cfg.weights
    fmt = cfg.weights_format
    weights = read_weights(path)  # what the file is: decided by the runtime, once
    if weights.exported:
        raise CheckpointError(f"{path}: an exported {weights.kind} model, not weights to train from; use the "
                              "checkpoint it was exported from")
    obj = weights.obj
    if fmt == "auto":
        fmt = weights.kind
        if not fmt:
            raise CheckpointError(
                f"{path}: cannot tell what kind of weights this is (not a cspdet checkpoint, no YOLOX "
                "'backbone.backbone.' or timm 'stem.conv1.' keys); set model.weights_format=cspdet|timm|yolox"
            )
    if fmt == "ultralytics":  # converted by the restricted reader as it was read (a cspdet checkpoint dict)
        if weights.kind != "ultralytics":
            raise CheckpointError(f"{path}: model.weights_format=ultralytics, but this is not an Ultralytics "
                                  f"checkpoint ({weights.kind or 'unknown kind'})")
        return _load_detector_state(model, obj["model"], path, weights_source(path, fmt), "Ultralytics weights",
                                    allow_class_change)
    if fmt == "cspdet":
        ckpt = load_checkpoint(path)
        kind = ckpt.get("kind")
        meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
        source = weights_source(path, fmt, meta.get("source", ckpt.get("source")))
        if kind == "classifier":
            report = _load_backbone_from_classifier(model, ckpt["model"], path)
            return InitialWeights(report, source, _outside_backbone(model))
        if kind == "detector":
            return _load_detector_state(model, ckpt["model"], path, source, "cspdet detector checkpoint",
                                        allow_class_change)
        raise CheckpointError(f"{path}: cspdet checkpoint of unknown kind {kind!r}")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict (a mapping of tensors), got {type(obj).__name__}")
    from ..models import load_timm_weights

    if fmt == "timm":
        state = obj.get("state_dict", obj)
        try:
            load_timm_weights(model.backbone, state)
        except ValueError as err:
            raise CheckpointError(f"{path}: timm weights do not fit model.backbone: {err}") from None
        return InitialWeights(f"initialised the backbone from timm weights {path} (neck and head: fresh)",
                              weights_source(path, fmt), _outside_backbone(model))
    if fmt == "yolox":
        from ..models import YoloxWeightsError, yolox_to_cspdet_state_dict

        state = obj.get("model", obj)
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a YOLOX checkpoint ({{'model': state_dict}}), got "
                                  f"{type(state).__name__}")
        try:
            converted, unplaced = yolox_to_cspdet_state_dict(state)
        except YoloxWeightsError as err:
            raise CheckpointError(f"{path}: YOLOX weights do not fit the detector: {err}") from None
        if unplaced:
            raise CheckpointError(f"{path}: YOLOX weights do not fit the detector: YOLOX keys with no place in "
                                  f"cspdet: {_short(unplaced)}")
        return _load_detector_state(model, converted, path, weights_source(path, fmt), "YOLOX checkpoint",
                                    allow_class_change, what="YOLOX weights do not fit the detector")
    raise CheckpointError(f"model.weights_format: unknown format {fmt!r}")


def _outside_backbone(model: torch.nn.Module) -> list[str]:
    return [k for k in model.state_dict() if not k.startswith("backbone.")]


def _load_yolox_state(model: torch.nn.Module, obj: Any, path: str | os.PathLike) -> None:
    """Load a YOLOX checkpoint object (``{"model": state_dict}`` or a bare state dict) into ``model``."""
    from ..models import load_yolox_weights

    state = obj.get("model", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a YOLOX checkpoint ({{'model': state_dict}}), got "
                              f"{type(state).__name__}")
    try:
        load_yolox_weights(model, state)
    except ValueError as err:
        raise CheckpointError(f"{path}: YOLOX weights do not fit the detector: {err}") from None


def _load_backbone_from_classifier(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str) -> str:
    backbone = model.backbone
    own = backbone.state_dict()
    source = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing = [k for k in own if k not in source]
    unexpected = [k for k in source if k not in own]
    mismatched = [f"{k} {tuple(source[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in source and source[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{path}: the classifier's backbone does not fit this detector's backbone (pretrain the same "
            f"architecture: pretrain.model / stage_defs matching model.name): missing {_short(missing)}; "
            f"unexpected {_short(unexpected)}; shape mismatch {_short(mismatched)}"
        )
    backbone.load_state_dict(source, strict=True)
    return f"initialised the backbone ({len(source)} tensors) from classifier checkpoint {path}"


def _load_detector_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike,
                         source: dict[str, Any], title: str, allow_class_change: bool = True,
                         what: str = "detector weights do not fit this model") -> InitialWeights:
    """Load a whole detector's weights (cspdet layout); head tensors whose shape differs (a different number of
    classes) keep their fresh initialisation when ``allow_class_change``, and the report names each one."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    # A different number of classes only changes head tensors; everything else must fit exactly.
    bad_shapes = [k for k in mismatched if not (allow_class_change and k.startswith("head."))]
    if missing or unexpected or bad_shapes:
        hint = ("; the number of classes differs (model.num_classes must equal the weights' here)"
                if not allow_class_change and any(k.startswith("head.") for k in bad_shapes) else "")
        raise CheckpointError(
            f"{path}: {what}: missing {_short(missing)}; unexpected {_short(unexpected)}; shape mismatch "
            f"{_short([f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in bad_shapes])}{hint}"
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=False)
    lines = [f"initialised the detector from {title} {path}: {len(own) - len(mismatched)} of {len(own)} tensors "
             f"loaded (format {source['format']}, licence {source['licence']}, sha256 {source['sha256'][:12]}...)"]
    if mismatched:
        lines.append(f"  {len(mismatched)} class-dependent head tensors re-initialised (the weights have another "
                     f"number of classes than this model's {getattr(model, 'num_classes', '?')}):")
        lines += [f"    {k}: weights {tuple(state[k].shape)} -> model {tuple(own[k].shape)}" for k in mismatched]
    return InitialWeights("\n".join(lines), source, mismatched)


# ----------------------------------------------------------------------------------- YOLOX conversion


def convert_yolox_checkpoint(
    yolox_path: str | os.PathLike,
    out_path: str | os.PathLike,
    name: str | None = None,
    img_size: int | None = None,
    class_names: list[str] | None = None,
    category_ids: list[int] | None = None,
) -> dict[str, Any]:
    """Turn an official YOLOX ``.pth`` (yolox_nano/tiny/s/m/l/x) into a cspdet detector checkpoint.

    The result works everywhere a trained cspdet checkpoint does (``cspdet predict``, ``cspdet val``,
    ``Predictor.from_checkpoint``). Class names and ids default to COCO's 80 classes for an 80-class model and
    to ``"0".."C-1"`` otherwise.

    Args:
        yolox_path: the YOLOX checkpoint (its ``"model"`` entry holds the weights).
        out_path: where to write the cspdet checkpoint (atomically).
        name: the matching cspdet preset, ``cspdarknet_{nano,tiny,s,m,l,x}``; None = read the size from the
            weights (:func:`cspdet.models.infer_yolox_preset`).
        img_size: inference / evaluation size stored in the metadata (YOLOX: 416 for nano/tiny, else 640).
        class_names, category_ids: the model's classes (default: see above).

    Returns:
        the checkpoint dict that was written.

    Raises:
        CheckpointError: unreadable or non-YOLOX file, or a ``name`` whose layout differs from the weights' (one
            line naming the preset that fits).
        ConfigError: class names or ids that do not match the weights' number of classes, an unknown preset.
    """
    from ..coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
    from ..models import DETECTORS, DetectorMeta, SpecError, YoloxWeightsError, create_detector, infer_yolox_preset
    from ..runtime.checkpoint import new_checkpoint, save_checkpoint

    weights = read_weights(yolox_path)
    obj = weights.obj
    if weights.kind != "yolox":
        raise CheckpointError(f"{yolox_path}: not an official YOLOX checkpoint (no 'backbone.backbone.' keys)")
    try:
        inferred, num_classes = infer_yolox_preset(obj)
    except YoloxWeightsError as err:
        raise CheckpointError(f"{yolox_path}: {err}") from None
    if name is None:
        name = inferred
    elif name not in DETECTORS.names():
        raise ConfigError(f"--model {name}: unknown preset; these weights are {_yolox_title(inferred)}: use "
                          f"--model {inferred} or leave --model out")
    elif name != inferred and name.startswith("cspdarknet_"):
        raise CheckpointError(f"{yolox_path}: these are {_yolox_title(inferred)} weights, not "
                              f"{_yolox_title(name)}: use --model {inferred} or leave --model out")
    if class_names is None:
        class_names = list(COCO_CLASSES) if num_classes == 80 else [str(i) for i in range(num_classes)]
    class_names = list(class_names)
    if len(class_names) != num_classes:
        raise ConfigError(f"--names: {len(class_names)} class names but {yolox_path} has {num_classes} classes")
    category_ids = list(category_ids or (COCO_CATEGORY_IDS if class_names == list(COCO_CLASSES)
                                         else range(len(class_names))))
    if len(category_ids) != len(class_names):
        raise ConfigError(f"{len(class_names)} class names but {len(category_ids)} category ids")
    size = img_size or (416 if name in ("cspdarknet_nano", "cspdarknet_tiny") else 640)
    try:
        model = create_detector(name, num_classes=num_classes)
    except SpecError as err:
        raise ConfigError(f"--model: {err}") from None
    try:
        _load_yolox_state(model, obj, yolox_path)
    except CheckpointError:  # a custom preset of another layout: the key-by-key report runs for pages
        raise CheckpointError(f"{yolox_path}: the weights do not fit --model {name}; they are "
                              f"{_yolox_title(inferred)} weights: use --model {inferred} or leave --model out"
                              ) from None
    from .provenance import weights_source

    source = weights_source(yolox_path, "yolox")  # path, sha256, licence (Apache-2.0)
    meta = DetectorMeta(class_names, category_ids, img_size=(size, size), strides=model.strides, preset=name,
                        source=source)
    ckpt = new_checkpoint("detector", model.spec.to_dict(), meta.to_dict(),
                          {k: v.detach().cpu() for k, v in model.state_dict().items()}, source=source)
    save_checkpoint(ckpt, out_path)
    return ckpt


def _yolox_title(preset: str) -> str:
    """``"cspdarknet_nano"`` -> ``"YOLOX-Nano"`` (cspdet's presets have YOLOX's names)."""
    size = preset.removeprefix("cspdarknet_")
    return f"YOLOX-{size.capitalize() if len(size) > 1 else size.upper()}"
