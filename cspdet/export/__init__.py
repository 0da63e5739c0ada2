"""Deployment writers: export a detector to ONNX / OpenVINO / TorchScript (or a registered format) with its
metadata, int8 post-training quantisation, and the benchmark. Running exported files is the runtime's part
(:func:`cspdet.runtime.open_model`); the formats themselves are the table in :mod:`cspdet.runtime.formats`.

The runtimes (onnx, onnxruntime, onnxsim, openvino, nncf) are the ``export`` extra (``pip install
'cspdet[export]'``), imported only when used; a missing one is a one-line :class:`MissingExtraError`.
"""

from __future__ import annotations

from .._deprecated import moved
from ..runtime.errors import ExportError, ExportUsageError, MissingExtraError
from .exporters import (
    DEFAULT_OPSET,
    EXPORT_FORMATS,
    ExportResult,
    WriteRequest,
    export_detector,
    export_model,
    export_path,
    export_suffix,
)
from .graph import INFO_KEY, ExportGraph, export_info, parse_info

__all__ = [
    "DEFAULT_OPSET", "EXPORT_FORMATS", "INFO_KEY", "ExportError", "ExportGraph", "ExportResult", "ExportUsageError",
    "MissingExtraError", "WriteRequest", "export_detector", "export_info", "export_model", "export_path",
    "export_suffix", "parse_info",
]

# the loaders moved to the runtime (old imports keep working for one release, with a warning)
__getattr__ = moved(__name__, {
    **dict.fromkeys(("DeployedDetector", "OnnxBackend", "OpenVINOBackend", "TorchScriptBackend"),
                    "cspdet.runtime.backends"),
    "DEPLOYED_SUFFIXES": "cspdet.runtime.formats", "deployed_format": "cspdet.runtime.formats",
    "load_backend": "cspdet.runtime.open", "load_inference_model": "cspdet.runtime.open:open_model",
})
