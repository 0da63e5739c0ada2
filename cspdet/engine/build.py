"""Turn configs and checkpoints into models: the one place that maps ``ModelConfig`` onto ``cspdet.models``."""

from __future__ import annotations

from typing import Any

import torch

from ..config import ConfigError, ModelConfig, config_from_dict
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
    except (KeyError, ValueError, TypeError) as err:
        raise ConfigError(f"model: cannot build {cfg.name!r}: {err}") from None


def detector_from_checkpoint(path: str, device: str | torch.device = "cpu"):
    """Rebuild a trained detector from a cspdet detector checkpoint.

    Returns:
        (detector in eval mode on ``device``, the checkpoint dict). The checkpoint's ``config`` says which
        model to build, so no config file is needed.

    Raises:
        CheckpointError: not a cspdet detector checkpoint, or weights that do not fit the model it describes.
    """
    ckpt = load_checkpoint(path, kind="detector")
    try:
        cfg = config_from_dict(ckpt["config"], source=f"in the config stored in {path}")
    except (KeyError, ConfigError) as err:
        raise CheckpointError(f"{path}: checkpoint config is unusable: {err}") from None
    model = build_detector(cfg.model)
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as err:  # size mismatches
        raise CheckpointError(f"{path}: weights do not fit model {cfg.model.name!r}: {_first(err)}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match model {cfg.model.name!r} with {cfg.model.num_classes} classes "
            f"(missing: {_short(missing)}; unexpected: {_short(unexpected)})"
        )
    return model.to(device).eval(), ckpt


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

    * cspdet **classifier** checkpoint (``tools/pretrain.py``): its CSPNet ``stem.*`` / ``stages.*`` tensors
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
        from ..models import load_yolox_weights

        state = obj.get("model", obj)
        try:
            load_yolox_weights(model, state)
        except ValueError as err:
            raise CheckpointError(f"{path}: YOLOX weights do not fit the detector: {err}") from None
        return f"initialised the detector from YOLOX checkpoint {path}"
    raise CheckpointError(f"model.weights_format: unknown format {fmt!r}")


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
    yolox_path: str,
    out_path: str,
    name: str = "cspdarknet_s",
    img_size: int | None = None,
    class_names: list[str] | None = None,
    category_ids: list[int] | None = None,
) -> dict[str, Any]:
    """Turn an official YOLOX ``.pth`` (yolox_nano/tiny/s/m/l/x) into a cspdet detector checkpoint.

    The result works everywhere a trained cspdet checkpoint does (``tools/detect.py``, ``tools/eval.py``,
    ``Predictor.from_checkpoint``). Class names and ids default to COCO's 80 classes.

    Args:
        yolox_path: the YOLOX checkpoint (its ``"model"`` entry holds the weights).
        out_path: where to write the cspdet checkpoint (atomically).
        name: the matching cspdet preset, ``cspdarknet_{nano,tiny,s,m,l,x}``.
        img_size: evaluation / inference size stored in the config (YOLOX: 416 for nano/tiny, else 640).

    Returns:
        the checkpoint dict that was written.
    """
    from ..config import config_to_dict, load_config
    from ..data.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
    from .checkpoint import CHECKPOINT_FORMAT, save_checkpoint

    class_names = list(class_names or COCO_CLASSES)
    category_ids = list(category_ids or (COCO_CATEGORY_IDS if len(class_names) == 80 else range(len(class_names))))
    if len(category_ids) != len(class_names):
        raise ConfigError(f"{len(class_names)} class names but {len(category_ids)} category ids")
    size = img_size or (416 if name in ("cspdarknet_nano", "cspdarknet_tiny") else 640)
    cfg = load_config(None, [f"model.name={name}", f"model.num_classes={len(class_names)}",
                             f"data.img_size={size}", f"eval.img_size={size}"])
    model = build_detector(cfg.model)
    cfg.model.weights, cfg.model.weights_format = yolox_path, "yolox"
    init_weights(model, cfg.model)
    cfg.model.weights, cfg.model.weights_format = None, "auto"  # the weights now live in the checkpoint itself
    ckpt = {
        "format": CHECKPOINT_FORMAT, "kind": "detector", "version": 1, "config": config_to_dict(cfg),
        "class_names": class_names, "category_ids": category_ids,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "source": f"converted from YOLOX checkpoint {yolox_path}",
    }
    save_checkpoint(ckpt, out_path)
    return ckpt
