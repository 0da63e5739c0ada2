"""Turn configs and checkpoints into models: the one place that maps ``ModelConfig`` onto ``cspdet.models``."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..config import ConfigError, ModelConfig
from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, load_state_file

__all__ = [
    "build_detector", "convert_yolox_checkpoint", "detect_weights_format", "detector_from_checkpoint", "init_weights",
    "model_overrides",
]


def model_overrides(cfg: ModelConfig) -> dict[str, Any]:
    """Keyword overrides for ``create_detector`` from the optional fields of ``cfg`` (None = preset default)."""
    keys = ("depth", "width", "depthwise", "act", "stem_channels", "stage_defs")
    return {k: getattr(cfg, k) for k in keys if getattr(cfg, k) is not None}


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
        raise ConfigError(f"model: cannot build {cfg.name!r}: {reason[:300]}") from None  # its C++ stack


def detector_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild a trained detector from a cspdet detector checkpoint: its spec, metadata and weights.

    Returns:
        (detector in eval mode on ``device`` with ``detector.meta`` from the checkpoint, the checkpoint dict).
        No config file is needed and the run config stored in training checkpoints is not read.

    Raises:
        CheckpointError: not a cspdet detector checkpoint, a spec this cspdet cannot build, or weights that do
            not fit the model it describes.
    """
    from ..models import Detector, DetectorMeta, DetectorSpec, SpecError

    ckpt = load_checkpoint(path, kind="detector")
    spec, meta = (ckpt.get("spec"), ckpt.get("meta")) if ckpt.get("version", 1) >= 2 else _upgrade_v1(ckpt, path)
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
# meta-device build below loop for hours over 2**31 blocks).
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


def _upgrade_v1(ckpt: dict[str, Any], path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Spec and meta of a version-1 checkpoint, rebuilt from its ``config["model"]``, class names and sizes.

    Only the model keys of the stored config are read (as plain data), never the whole training config.
    """
    from ..models import SpecError, detector_spec

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


# ------------------------------------------------------------------------------------ initial weights


def detect_weights_format(obj: Any) -> str:
    """Guess what a loaded weights file is: "cspdet", "yolox", "timm", or "" when it cannot tell.

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


def init_weights(model: torch.nn.Module, cfg: ModelConfig) -> str:
    """Initialise a freshly built detector from ``cfg.weights`` (format ``cfg.weights_format`` or detected).

    * cspdet **classifier** checkpoint (``cspdet pretrain``): its CSPNet ``stem.*`` / ``stages.*`` tensors
      go to ``model.backbone`` (all backbone tensors must be present with equal shapes; ``head.*`` is dropped).
    * cspdet **detector** checkpoint: all tensors; when the number of classes differs, the head tensors whose
      shape depends on it keep their fresh initialisation (fine-tuning on a new dataset).
    * **timm** ``cspresnet50`` / ``cspresnext50`` / ``cspdarknet53`` state dict: into ``model.backbone``
      via :func:`cspdet.models.load_timm_weights` (a ``{"state_dict": ...}`` wrapper is accepted).
    * **YOLOX** checkpoint (``{"model": ...}`` or a bare state dict): :func:`cspdet.models.load_yolox_weights`.

    Returns:
        a one-line report of what was loaded.

    Raises:
        CheckpointError: unreadable file, unknown format, or weights that do not fit (the message lists keys).
    """
    path = cfg.weights
    if not path:
        return ""
    obj = load_state_file(path)
    fmt = cfg.weights_format
    if fmt == "auto":
        fmt = detect_weights_format(obj)
        if not fmt:
            raise CheckpointError(
                f"{path}: cannot tell what kind of weights this is (not a cspdet checkpoint, no YOLOX "
                "'backbone.backbone.' or timm 'stem.conv1.' keys); set model.weights_format=cspdet|timm|yolox"
            )
    if fmt == "cspdet":
        ckpt = load_checkpoint(path)
        kind = ckpt.get("kind")
        if kind == "classifier":
            return _load_backbone_from_classifier(model, ckpt["model"], path)
        if kind == "detector":
            return _load_detector_state(model, ckpt["model"], path)
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
        return f"initialised the backbone from timm weights {path}"
    if fmt == "yolox":
        _load_yolox_state(model, obj, path)
        return f"initialised the detector from YOLOX checkpoint {path}"
    raise CheckpointError(f"model.weights_format: unknown format {fmt!r}")


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


def _load_detector_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str) -> str:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    # A different number of classes only changes head tensors; everything else must fit exactly.
    bad_shapes = [k for k in mismatched if not k.startswith("head.")]
    if missing or unexpected or bad_shapes:
        raise CheckpointError(
            f"{path}: detector weights do not fit this model: missing {_short(missing)}; unexpected "
            f"{_short(unexpected)}; shape mismatch {_short(bad_shapes)}"
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=False)
    note = f" ({len(mismatched)} class-dependent head tensors re-initialised)" if mismatched else ""
    return f"initialised the detector from {path}{note}"


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
    from ..data.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
    from ..models import DETECTORS, DetectorMeta, SpecError, YoloxWeightsError, create_detector, infer_yolox_preset
    from .checkpoint import new_checkpoint, save_checkpoint

    obj = load_state_file(yolox_path)
    if not isinstance(obj, dict) or detect_weights_format(obj) != "yolox":
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
    source = f"converted from YOLOX checkpoint {yolox_path}"
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
