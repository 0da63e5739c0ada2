"""Turn configs and checkpoints into models: the one place that maps ``ModelConfig`` onto ``cspdet.models``."""

from __future__ import annotations

from typing import Any

import torch

from ..config import ConfigError, ModelConfig, config_from_dict
from .checkpoint import CheckpointError, load_checkpoint

__all__ = ["build_detector", "detector_from_checkpoint", "model_overrides"]


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


def _first(err: Exception) -> str:
    return " ".join(str(err).split())[:300]


def _short(keys: list[str], n: int = 5) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
