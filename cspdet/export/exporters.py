"""Write a detector as an ONNX, OpenVINO or TorchScript file that carries its own metadata.

    >>> from cspdet.export import export_model
    >>> result = export_model("runs/train/exp/best.pt", "onnx")            # -> runs/train/exp/best.onnx
    >>> result = export_model("best.pt", "openvino", int8=True, data="configs/small_scratch.yaml")

Every file is written atomically (a temporary file renamed over the target; OpenVINO's ``.bin`` before its
``.xml``), so an interrupted export never leaves a half file under the real name.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fileio import atomic_write, make_dirs
from ._deps import ExportError, require
from .graph import INFO_KEY, ExportGraph, dumps_info, export_info

__all__ = ["DEFAULT_OPSET", "EXPORT_FORMATS", "ExportResult", "export_detector", "export_model", "export_suffix"]

#: ONNX opset written by default: the newest the legacy (TorchScript-based) exporter of torch supports here.
DEFAULT_OPSET = 20
EXPORT_FORMATS = ("onnx", "openvino", "torchscript")
_SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".torchscript"}


@dataclass
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        path: the exported file (OpenVINO: the ``.xml``; its ``.bin`` lies beside it).
        format: onnx | openvino | torchscript.
        seconds: wall time of the export (including simplification and int8 calibration).
        size_bytes: bytes on disk (OpenVINO: ``.xml`` + ``.bin``).
        info: the metadata document stored in the file.
        notes: one-line remarks (simplifier node counts, int8 calibration size, ...).
    """

    path: Path
    format: str
    seconds: float
    size_bytes: int
    info: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def export_suffix(fmt: str, int8: bool = False) -> str:
    """Default file name ending of a format (``_int8`` before the suffix for int8 exports)."""
    return ("_int8" if int8 else "") + _SUFFIX[fmt]


def _hw(img_size: int | Sequence[int]) -> tuple[int, int]:
    hw = (int(img_size), int(img_size)) if isinstance(img_size, int) else tuple(int(v) for v in img_size)
    if len(hw) != 2 or min(hw) <= 0:
        raise ExportError(f"--img-size must be N or H W, got {img_size!r}")
    return hw  # type: ignore[return-value]


def export_model(weights: str | os.PathLike, fmt: str, img_size: int | Sequence[int] | None = None,
                 dynamic: bool = False, batch: int = 1, int8: bool = False, data: str | os.PathLike | None = None,
                 calib: int = 300, nms: bool = False, out: str | os.PathLike | None = None, simplify: bool = True,
                 opset: int = DEFAULT_OPSET) -> ExportResult:
    """Export the detector of a cspdet checkpoint (what ``tools/export.py`` runs).

    Args:
        weights: cspdet detector checkpoint (``best.pt``); its spec and metadata are all that is read.
        fmt: ``onnx`` | ``openvino`` | ``torchscript``.
        img_size: input (H, W) (or N) of the export; default the checkpoint's ``meta.img_size``.
        dynamic: batch, height and width chosen at run time (ONNX / OpenVINO / TorchScript); otherwise fixed.
        batch: the fixed batch size of a static export.
        int8: post-training int8 quantisation (OpenVINO: NNCF; ONNX: ONNX Runtime static QDQ), calibrated on
            ``calib`` training images of the dataset of config ``data``.
        nms: post-processing inside the graph (output (B, max_det, 6)); static shapes only.
        out: output path; default the checkpoint's path with the format's suffix.
        simplify: run onnxsim on ONNX graphs (ONNX and OpenVINO exports).
        opset: ONNX opset.

    Raises:
        CheckpointError / ExportError: a bad checkpoint, bad options, a missing extra (one line each).
    """
    from ..engine.build import detector_from_checkpoint

    model, _ = detector_from_checkpoint(weights)
    out = Path(out) if out else Path(weights).with_name(Path(weights).stem + export_suffix(fmt, int8))
    return export_detector(model, fmt, out, img_size=img_size, dynamic=dynamic, batch=batch, int8=int8, data=data,
                           calib=calib, nms=nms, simplify=simplify, opset=opset)


def export_detector(model: nn.Module, fmt: str, out: str | os.PathLike, img_size: int | Sequence[int] | None = None,
                    dynamic: bool = False, batch: int = 1, int8: bool = False, data: str | os.PathLike | None = None,
                    calib: int = 300, nms: bool = False, simplify: bool = True,
                    opset: int = DEFAULT_OPSET) -> ExportResult:
    """Export an in-memory :class:`cspdet.models.Detector` (its ``meta`` goes into the file); see
    :func:`export_model` for the arguments. The model itself is not modified (a fused copy is exported)."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if nms and dynamic:
        raise ExportError("--nms exports have static shapes (the in-graph NMS runs per image): drop --dynamic")
    if int8 and fmt == "torchscript":
        raise ExportError("--int8 is available for onnx and openvino exports, not torchscript")
    if int8 and not data:
        raise ExportError("--int8 needs --data CONFIG (its dataset's training images calibrate the quantisation)")
    if batch < 1:
        raise ExportError(f"--batch must be >= 1, got {batch}")
    hw = _hw(img_size if img_size is not None else model.meta.img_size)
    stride = max(model.strides)
    if hw[0] % stride or hw[1] % stride:
        raise ExportError(f"--img-size {hw[0]} {hw[1]} must be multiples of the model stride {stride}")
    meta = model.meta
    nms_cfg = {"conf": meta.conf, "iou": meta.iou, "max_det": meta.max_det} if nms else None
    graph = ExportGraph(model, nms=nms, **(nms_cfg or {})).eval()
    out = Path(out)
    tic = time.perf_counter()
    notes: list[str] = []
    info = export_info(model, fmt, hw, dynamic, batch, nms=nms_cfg, precision="int8" if int8 else "fp32",
                       opset=opset if fmt != "torchscript" else None)
    example = torch.full((batch, 3, *hw), 114.0)
    if fmt == "torchscript":
        _write_torchscript(graph, example, out, info)
    else:
        proto = _onnx_proto(graph, example, dynamic, opset, simplify, notes)
        if fmt == "onnx":
            if int8:
                from .quantize import quantize_onnx

                proto = quantize_onnx(proto, model, data, calib, hw, notes)
            _write_onnx(proto, out, info)
        else:
            _write_openvino(proto, out, info, int8=int8, model=model, data=data, calib=calib, hw=hw, notes=notes)
    size = out.stat().st_size + (out.with_suffix(".bin").stat().st_size if fmt == "openvino" else 0)
    return ExportResult(out, fmt, time.perf_counter() - tic, size, info, notes)


# -------------------------------------------------------------------------------------------------- ONNX


def _onnx_proto(graph: ExportGraph, example: torch.Tensor, dynamic: bool, opset: int, simplify: bool,
                notes: list[str]):
    """Trace ``graph`` to an ONNX ModelProto (input ``images``, output ``preds`` or ``dets``), simplified."""
    onnx = require("onnx", "to export ONNX / OpenVINO")
    output = "dets" if graph.nms else "preds"
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, output: {0: "batch", 1: "points"}} if dynamic else None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about the input checks (constant for a given shape)
        torch.onnx.export(graph, (example,), buf, opset_version=opset, input_names=["images"], output_names=[output],
                          dynamic_axes=axes, do_constant_folding=True, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    if simplify:
        # onnxsim rather than onnxslim: the same graphs in a fraction of the time (benchmarks/results/measurements.md)
        onnxsim = require("onnxsim", "to simplify ONNX graphs (or pass simplify=False / --no-simplify)")
        before = len(proto.graph.node)
        try:
            simplified, ok = onnxsim.simplify(proto)
        except Exception as err:  # noqa: BLE001 -- the simplifier failed: keep the valid unsimplified graph
            simplified, ok = proto, False
            notes.append(f"onnxsim failed ({' '.join(str(err).split())[:120]}); graph left unsimplified")
        if ok:
            proto = simplified
            notes.append(f"onnxsim: {before} -> {len(proto.graph.node)} nodes")
    return proto


def _set_onnx_metadata(proto, info: dict[str, Any]) -> None:
    del proto.metadata_props[:]
    description = (f"cspdet detector: {info['meta'].get('preset') or 'custom'} ({info['num_classes']} classes, "
                   f"output {info['output']})")
    for key, value in ((INFO_KEY, dumps_info(info)), ("description", description)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "cspdet", str(info["cspdet_version"])


def _write_onnx(proto, out: Path, info: dict[str, Any]) -> None:
    _set_onnx_metadata(proto, info)
    atomic_write(out, proto.SerializeToString())


# -------------------------------------------------------------------------------------------- OpenVINO


def _write_openvino(proto, out: Path, info: dict[str, Any], int8: bool, model: nn.Module,
                    data: str | os.PathLike | None, calib: int, hw: tuple[int, int], notes: list[str]) -> None:
    """ONNX proto -> OpenVINO IR (fp32 weights; NNCF int8 with ``int8``), metadata in ``rt_info``; the ``.xml``
    and ``.bin`` are written in a temporary folder beside ``out`` and renamed into place, ``.bin`` first."""
    ov = require("openvino", "to export OpenVINO models")
    if out.suffix != ".xml":
        raise ExportError(f"{out}: an OpenVINO export is an .xml file (with its .bin beside it)")
    ov_model = ov.convert_model(io.BytesIO(proto.SerializeToString()))
    if int8:
        from .quantize import quantize_openvino

        ov_model = quantize_openvino(ov_model, model, data, calib, hw, notes)
    ov_model.set_rt_info(dumps_info(info), [INFO_KEY])
    make_dirs(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", suffix=".tmp", dir=out.parent))
    try:
        ov.save_model(ov_model, str(tmp / out.name), compress_to_fp16=False)
        for src in (tmp / out.with_suffix(".bin").name, tmp / out.name):  # .bin first: an .xml always has its .bin
            os.replace(src, out.parent / src.name)
    except OSError as err:
        from ..fileio import as_output_error

        raise as_output_error(err, out) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------- TorchScript


def _write_torchscript(graph: ExportGraph, example: torch.Tensor, out: Path, info: dict[str, Any]) -> None:
    """Trace ``graph`` (shapes stay symbolic in the trace, so any multiple-of-32 size runs) and save it with the
    metadata as the extra file ``cspdet.json``."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings, and torch.jit's deprecation in favour of torch.export
        traced = torch.jit.trace(graph, example, check_trace=False)
        traced = torch.jit.freeze(traced.eval()) if not graph.nms else traced
        torch.jit.save(traced, buf, _extra_files={f"{INFO_KEY}.json": dumps_info(info)})
    atomic_write(out, buf.getvalue())
