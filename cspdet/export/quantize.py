"""int8 post-training quantisation of an exported graph, calibrated on training images of a config's dataset.

* OpenVINO: NNCF ``quantize`` (mixed preset: symmetric weights, asymmetric activations, which suits SiLU outputs).
* ONNX: ONNX Runtime static quantisation (QDQ, per-channel weights, MinMax calibration).

Both keep the decoding at the end of the graph (sigmoid / exp / softmax / DFL projection, the grid arithmetic) in
float, and the head's last 1x1 prediction convolutions (``*_pred``: box / DFL bin, class and objectness logits; well
under 1 % of the FLOPs) too, and the first convolution of the network (it sees raw 0..255 pixels; ~1 % of the
FLOPs): the rest of backbone, neck and head is quantised, so box coordinates in pixels keep their precision. NNCF
runs its full bias correction (not the fast one). Each of these choices halves or better the int8 mAP loss of a
small trained model (about -1.2 -> -0.5 mAP points in all; measured: ``benchmarks/results/measurements.md``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from torch import nn

from ..data.letterbox import Letterbox
from ..runtime.errors import ExportError, require

__all__ = ["calibration_images", "quantize_onnx", "quantize_openvino"]

# ONNX node names of the decoding: ops directly in the head module (its levels' convs are in submodules).
_DECODE_PATTERN = r".*/head/[^/]+$"
# ... and the final 1x1 prediction convs of every head level (cls_pred, reg_pred, obj_pred, box_pred).
_PRED_PATTERN = r".*/head/.*_pred/.*"


def calibration_images(data: str | os.PathLike, n: int, hw: tuple[int, int]) -> list[np.ndarray]:
    """``n`` training images (evenly spread over the split) of the dataset ``data`` (a dataset descriptor, or a
    config YAML naming one), letterboxed to
    ``hw``: a list of (1, 3, H, W) float32 RGB 0..255 arrays. Falls back to the val split when there is no train
    split. Unreadable images are skipped."""
    from ..config.data_yaml import config_for_data
    from ..data import build_dataset
    from ..data.image_io import ImageReadError

    if n < 1:
        raise ExportError(f"--calib must be >= 1, got {n}")
    cfg = config_for_data(data)
    try:
        dataset = build_dataset(cfg.data.dataset, "train", strict=False)
    except ValueError:
        dataset = build_dataset(cfg.data.dataset, cfg.eval.split, strict=False)
    if len(dataset) == 0:
        raise ExportError(f"{data}: its dataset has no images to calibrate with")
    idx = np.unique(np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int))
    lb = Letterbox(hw)
    out = []
    for i in idx:
        try:
            img, _ = lb.apply(dataset.load_image(int(i)))
        except ImageReadError:
            continue
        out.append(np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32))
    if not out:
        raise ExportError(f"{data}: none of the calibration images could be read")
    return out


def quantize_openvino(ov_model: Any, model: nn.Module, data: str | os.PathLike, calib: int, hw: tuple[int, int],
                      notes: list[str]) -> Any:
    """An OpenVINO model quantised to int8 with NNCF (decoding ops kept in float)."""
    nncf = require("nncf", "for --int8 OpenVINO exports")
    nncf.set_log_level(logging.ERROR)  # its per-node INFO lines
    images = calibration_images(data, calib, hw)
    first = next((op.get_friendly_name() for op in ov_model.get_ordered_ops()
                  if op.get_type_name() in ("Convolution", "GroupConvolution")), None)
    scope = nncf.IgnoredScope(names=[first] if first else [], patterns=[_DECODE_PATTERN, _PRED_PATTERN],
                              validate=False)
    quantized = nncf.quantize(ov_model, nncf.Dataset(images), preset=nncf.QuantizationPreset.MIXED,
                              subset_size=len(images), ignored_scope=scope, fast_bias_correction=False)
    notes.append(f"NNCF int8, {len(images)} calibration images")
    return quantized


def quantize_onnx(proto: Any, model: nn.Module, data: str | os.PathLike, calib: int, hw: tuple[int, int],
                  notes: list[str]) -> Any:
    """An ONNX ModelProto quantised to int8 with ONNX Runtime static QDQ quantisation (Conv only)."""
    import re
    import tempfile
    from pathlib import Path

    onnx = require("onnx", "for --int8 ONNX exports")
    q = require("onnxruntime.quantization", "for --int8 ONNX exports")
    images = calibration_images(data, calib, hw)
    name = proto.graph.input[0].name

    class _Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {name: x}

    exclude = [n.name for n in proto.graph.node if re.match(_DECODE_PATTERN, n.name) or re.match(_PRED_PATTERN, n.name)]
    exclude += [n.name for n in proto.graph.node if n.op_type == "Conv"][:1]  # the first conv (graph order is topological)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(proto.SerializeToString())
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its "consider pre-processing" advice goes to the root logger
        try:
            q.quantize_static(str(src), str(dst), _Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                              activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                              op_types_to_quantize=["Conv"], nodes_to_exclude=exclude,
                              calibrate_method=q.CalibrationMethod.MinMax)
        finally:
            root.setLevel(level)
        out = onnx.load(str(dst))
    notes.append(f"ONNX Runtime static int8 (QDQ), {len(images)} calibration images")
    return out
