"""Write a detector as an ONNX, OpenVINO or TorchScript file that carries its own metadata.

    >>> from cspdet.export import export_model
    >>> result = export_model("runs/train/exp/best.pt", "onnx")            # -> runs/train/exp/best.onnx
    >>> result = export_model("best.pt", "openvino", int8=True, data="configs/small_scratch.yaml")

Every file is written atomically (a temporary file renamed over the target; OpenVINO's ``.bin`` before its
``.xml``), so an interrupted export never leaves a half file under the real name.
"""

from __future__ import annotations

import importlib
import io
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fileio import as_output_error, atomic_write, make_dirs
from ..runtime.callbacks import CallbackList
from ..runtime.errors import ExportError, require
from ..runtime.formats import DeployFormat, deploy_formats, get_format
from ..runtime.weights import detector_from_checkpoint, recorded_dataset
from .graph import INFO_KEY, ExportGraph, dumps_info, export_info
from .quantize import quantize_onnx, quantize_openvino

__all__ = ["DEFAULT_OPSET", "EXPORT_FORMATS", "ExportResult", "WriteRequest", "export_detector", "export_model",
           "export_path", "export_suffix", "write_onnx", "write_openvino", "write_torchscript"]

#: ONNX opset written by default: the newest the legacy (TorchScript-based) exporter of torch supports here.
DEFAULT_OPSET = 20


class _FormatNames(Sequence):
    """The names of the deploy formats (a live view of :mod:`cspdet.runtime.formats`: registered formats show)."""

    def __getitem__(self, index):  # type: ignore[override]
        return tuple(f.name for f in deploy_formats())[index]

    def __len__(self) -> int:
        return len(deploy_formats())

    def __iter__(self) -> Iterator[str]:
        return iter([f.name for f in deploy_formats()])

    def __repr__(self) -> str:
        return repr(tuple(self))


#: ``("torchscript", "onnx", "openvino", ...)``: every format of the table.
EXPORT_FORMATS = _FormatNames()


@dataclass
class WriteRequest:
    """What a format's writer gets (see :mod:`cspdet.runtime.formats`).

    Attributes:
        graph: the :class:`ExportGraph` to trace (a fused eval copy of ``model``); example: a (batch, 3, H, W)
            float32 input of the export's size; out: the file to write (atomically); info: the metadata document to
            embed (:func:`cspdet.export.graph.dumps_info` gives its JSON text; the loader reads it back with
            :func:`cspdet.runtime.metadata.parse_info`); model: the detector; hw, dynamic, batch, opset, simplify,
            int8, data, calib: the export's options; notes: one-line remarks the writer appends to.
    """

    graph: ExportGraph
    example: torch.Tensor
    out: Path
    info: dict[str, Any]
    model: nn.Module
    hw: tuple[int, int]
    dynamic: bool = False
    batch: int = 1
    opset: int = DEFAULT_OPSET
    simplify: bool = True
    int8: bool = False
    data: str | os.PathLike | None = None
    calib: int = 300
    notes: list[str] = field(default_factory=list)


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
    return ("_int8" if int8 else "") + get_format(fmt).suffix


def export_path(weights: str | os.PathLike, fmt: str, out: str | os.PathLike | None = None,
                int8: bool = False) -> Path:
    """Where an export of ``weights`` goes: ``out`` named by its format -- no ``out``: the checkpoint's path with
    the format's suffix (``best.onnx``); an existing folder (or one written with a trailing slash): the checkpoint's
    stem inside it; a name without a suffix: that name plus the format's suffix (``model`` -> ``model.onnx``,
    ``model.xml`` + ``model.bin`` for OpenVINO); a name with a suffix: as given."""
    ending = export_suffix(fmt, int8)
    if not out:
        return Path(weights).with_name(Path(weights).stem + ending)
    text = os.fspath(out)
    p = Path(text)
    if p.is_dir() or text.endswith(("/", os.sep)):
        return p / (Path(weights).stem + ending)
    if not p.suffix:
        return p.with_name(p.name + get_format(fmt).suffix)
    return p


def _writer(fmt: DeployFormat) -> Callable[[WriteRequest], None]:
    """The format's writer (a ``"module:function"`` reference is imported here, where writers live)."""
    if callable(fmt.writer):
        return fmt.writer
    module, _, name = fmt.writer.partition(":")
    return getattr(importlib.import_module(module), name)


def _hw(img_size: int | Sequence[int]) -> tuple[int, int]:
    hw = (int(img_size), int(img_size)) if isinstance(img_size, int) else tuple(int(v) for v in img_size)
    if len(hw) != 2 or min(hw) <= 0:
        raise ExportError(f"--img-size must be N or H W, got {img_size!r}")
    return hw  # type: ignore[return-value]


def export_model(weights: str | os.PathLike, fmt: str, img_size: int | Sequence[int] | None = None,
                 dynamic: bool = False, batch: int = 1, int8: bool = False, data: str | os.PathLike | None = None,
                 calib: int = 300, nms: bool = False, out: str | os.PathLike | None = None, simplify: bool = True,
                 opset: int = DEFAULT_OPSET, callbacks: Iterable[Any] | None = None,
                 nms_free: bool | None = None) -> ExportResult:
    """Export the detector of a cspdet checkpoint (what ``cspdet export`` runs).

    Args:
        weights: cspdet detector checkpoint (``best.pt``); its spec and metadata are all that is read.
        fmt: ``onnx`` | ``openvino`` | ``torchscript`` | a registered format (:mod:`cspdet.runtime.formats`).
        img_size: input (H, W) (or N) of the export; default the checkpoint's ``meta.img_size``.
        dynamic: batch, height and width chosen at run time (ONNX / OpenVINO / TorchScript); otherwise fixed.
        batch: the fixed batch size of a static export.
        int8: post-training int8 quantisation (OpenVINO: NNCF; ONNX: ONNX Runtime static QDQ), calibrated on
            ``calib`` training images of the dataset ``data`` (a dataset descriptor or a config YAML; default the
            dataset the checkpoint records).
        nms: post-processing inside the graph (output (B, max_det, 6)); static shapes only.
        out: output path, named by the format (:func:`export_path`); default the checkpoint's path with the
            format's suffix.
        simplify: run onnxsim on ONNX graphs (ONNX and OpenVINO exports).
        opset: ONNX opset.
        callbacks: objects with an ``on_export_end(model, result)`` hook, called once the file is written with the
            exported detector and the :class:`ExportResult` (:mod:`cspdet.runtime.callbacks`).
        nms_free: which branch of a head with a one-to-one branch the file runs: True its top-k (no NMS), False the
            one-to-many branch for NMS; default the checkpoint's inference mode. The file records it.

    Raises:
        CheckpointError / ExportError: a bad checkpoint, bad options, a missing extra (one line each).
    """
    get_format(fmt)  # an unknown format fails before the checkpoint is read
    model, _ = detector_from_checkpoint(weights)
    if nms_free is not None:
        if nms_free and not getattr(model.head, "one2one", False):
            raise ExportError(f"--nms-free: {weights} has no one-to-one branch (a csptal / yolo26 model trained with "
                              f"one2one has one); export it without --nms-free")
        model.nms_free = nms_free
    out = export_path(weights, fmt, out, int8)
    return export_detector(model, fmt, out, img_size=img_size, dynamic=dynamic, batch=batch, int8=int8, data=data,
                           calib=calib, nms=nms, simplify=simplify, opset=opset, callbacks=callbacks)


def export_detector(model: nn.Module, fmt: str, out: str | os.PathLike, img_size: int | Sequence[int] | None = None,
                    dynamic: bool = False, batch: int = 1, int8: bool = False, data: str | os.PathLike | None = None,
                    calib: int = 300, nms: bool = False, simplify: bool = True,
                    opset: int = DEFAULT_OPSET, callbacks: Iterable[Any] | None = None) -> ExportResult:
    """Export an in-memory :class:`cspdet.models.Detector` (its ``meta`` goes into the file); see
    :func:`export_model` for the arguments. The model itself is not modified (a fused copy is exported)."""
    try:
        record = get_format(fmt)
    except ValueError as err:
        raise ExportError(str(err)) from None
    if nms and dynamic:
        raise ExportError("--nms exports have static shapes (the in-graph NMS runs per image): drop --dynamic")
    if dynamic and not record.dynamic:
        raise ExportError(f"--dynamic is not available for {fmt} exports")
    if int8 and not record.int8:
        names = [f.name for f in deploy_formats() if f.int8]
        which = " and ".join(names) if len(names) <= 2 else ", ".join(names)
        raise ExportError(f"--int8 is available for {which} exports, not {fmt}")
    if int8 and not data:  # calibrate on the dataset the model was trained on, where it can be found from here
        data, tried = recorded_dataset(model.meta)
        if data is None:
            why = f"its dataset {' / '.join(tried)} is not found from here" if tried else "it records no dataset"
            raise ExportError(f"--int8 needs --data CONFIG or DATASET.yaml (its training images calibrate the "
                              f"quantisation): {why}")
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
    info = export_info(model, fmt, hw, dynamic, batch, nms=nms_cfg, precision="int8" if int8 else "fp32",
                       opset=opset if record.onnx_based else None)
    request = WriteRequest(graph, torch.full((batch, 3, *hw), 114.0), out, info, model, hw, dynamic=dynamic,
                           batch=batch, opset=opset, simplify=simplify, int8=int8, data=data, calib=calib)
    make_dirs(out.parent)
    _writer(record)(request)
    result = ExportResult(out, fmt, time.perf_counter() - tic, record.size_bytes(out), info, request.notes)
    CallbackList.of(callbacks).fire("on_export_end", model, result)
    return result


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


def write_onnx(req: WriteRequest) -> None:
    """The ``onnx`` format's writer: trace to ONNX (simplified), int8 QDQ with ``req.int8``, metadata in
    ``metadata_props``."""
    proto = _onnx_proto(req.graph, req.example, req.dynamic, req.opset, req.simplify, req.notes)
    if req.int8:
        proto = quantize_onnx(proto, req.model, req.data, req.calib, req.hw, req.notes)
    _set_onnx_metadata(proto, req.info)
    atomic_write(req.out, proto.SerializeToString())


# -------------------------------------------------------------------------------------------- OpenVINO


def write_openvino(req: WriteRequest) -> None:
    """The ``openvino`` format's writer: ONNX proto -> OpenVINO IR (fp32 weights; NNCF int8 with ``req.int8``),
    metadata in ``rt_info``; the ``.xml`` and ``.bin`` are written in a temporary folder beside ``out`` and renamed
    into place, ``.bin`` first."""
    ov = require("openvino", "to export OpenVINO models")
    out, info = req.out, req.info
    if out.suffix != ".xml":
        raise ExportError(f"{out}: an OpenVINO export is an .xml file (with its .bin beside it)")
    proto = _onnx_proto(req.graph, req.example, req.dynamic, req.opset, req.simplify, req.notes)
    ov_model = ov.convert_model(io.BytesIO(proto.SerializeToString()))
    if req.int8:
        ov_model = quantize_openvino(ov_model, req.model, req.data, req.calib, req.hw, req.notes)
    ov_model.set_rt_info(dumps_info(info), [INFO_KEY])
    make_dirs(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", suffix=".tmp", dir=out.parent))
    try:
        ov.save_model(ov_model, str(tmp / out.name), compress_to_fp16=False)
        for src in (tmp / out.with_suffix(".bin").name, tmp / out.name):  # .bin first: an .xml always has its .bin
            os.replace(src, out.parent / src.name)
    except OSError as err:
        raise as_output_error(err, out) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------- TorchScript


def write_torchscript(req: WriteRequest) -> None:
    """The ``torchscript`` format's writer: trace ``graph`` (shapes stay symbolic in the trace, so any
    multiple-of-32 size runs) and save it with the metadata as the extra file ``cspdet.json``."""
    graph, example, out, info = req.graph, req.example, req.out, req.info
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings, and torch.jit's deprecation in favour of torch.export
        traced = torch.jit.trace(graph, example, check_trace=False)
        traced = torch.jit.freeze(traced.eval()) if not graph.nms else traced
        torch.jit.save(traced, buf, _extra_files={f"{INFO_KEY}.json": dumps_info(info)})
    atomic_write(out, buf.getvalue())
