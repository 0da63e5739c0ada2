"""Deprecated: the backends and the loader moved to the runtime (:mod:`cspdet.runtime.backends`,
:func:`cspdet.runtime.open_model`, the format table :mod:`cspdet.runtime.formats`)."""

from __future__ import annotations

from .._deprecated import moved

__all__: list[str] = []

__getattr__ = moved(__name__, {
    **dict.fromkeys(("Backend", "DeployedDetector", "OnnxBackend", "OpenVINOBackend", "TorchScriptBackend"),
                    "cspdet.runtime.backends"),
    "DEPLOYED_SUFFIXES": "cspdet.runtime.formats", "deployed_format": "cspdet.runtime.formats",
    "load_backend": "cspdet.runtime.open", "load_inference_model": "cspdet.runtime.open:open_model",
})
