"""Deployment: export a detector to ONNX / OpenVINO / TorchScript with its metadata, run exported files through
the same ``Predictor`` / ``COCOEvaluator`` as checkpoints, int8 post-training quantisation, and the benchmark.

The runtimes (onnx, onnxruntime, onnxsim, openvino, nncf) are the ``export`` extra (``pip install
'cspdet[export]'``), imported only when used; a missing one is a one-line :class:`MissingExtraError`.
"""

from __future__ import annotations

from ._deps import ExportError, ExportUsageError, MissingExtraError
from .backends import (
    DEPLOYED_SUFFIXES,
    DeployedDetector,
    OnnxBackend,
    OpenVINOBackend,
    TorchScriptBackend,
    deployed_format,
    load_backend,
    load_inference_model,
)
from .exporters import DEFAULT_OPSET, EXPORT_FORMATS, ExportResult, export_detector, export_model, export_suffix
from .graph import INFO_KEY, ExportGraph, export_info, parse_info

__all__ = [
    "DEFAULT_OPSET", "DEPLOYED_SUFFIXES", "EXPORT_FORMATS", "INFO_KEY", "DeployedDetector", "ExportError",
    "ExportGraph", "ExportResult", "ExportUsageError", "MissingExtraError", "OnnxBackend", "OpenVINOBackend",
    "TorchScriptBackend", "deployed_format", "export_detector", "export_info", "export_model", "export_suffix",
    "load_backend", "load_inference_model", "parse_info",
]
