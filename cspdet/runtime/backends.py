"""Run exported files: ONNX Runtime, OpenVINO and TorchScript backends behind one small interface.

A backend maps a float32 (B, 3, H, W) RGB 0..255 batch to the graph's output tensor and knows the file's
metadata (``meta``, ``info``, ``img_size``, ``dynamic``). :class:`DeployedDetector` puts a backend where a
:class:`cspdet.models.Detector` goes (the :class:`~cspdet.runtime.contracts.InferenceModel` contract): ``predict``
(backend, then cspdet's own post-processing, so the detections equal PyTorch's), ``num_classes``, ``strides``,
``meta``, ``nms_free`` and ``eval_defaults``, which is all ``Predictor`` and ``COCOEvaluator`` use. A file's output
is read back into a :class:`cspdet.det.Predictions` record (:func:`cspdet.det.from_deploy_layout`) and
post-processed by :func:`cspdet.det.postprocess` like PyTorch's.
Which backend opens which file is the format table's business (:mod:`cspdet.runtime.formats`); the one entry
point is :func:`cspdet.runtime.open_model`.
"""

from __future__ import annotations

import abc
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..det.postprocess import filter_dets
from ..det.predictions import Predictions, from_deploy_layout
from ..models.contracts import HeadEvalDefaults
from .contracts import ModelFacade
from .cpu import resolve_precision
from .errors import ExportError, ExportUsageError, require
from .metadata import INFO_KEY, parse_info

__all__ = ["Backend", "DeployedDetector", "OnnxBackend", "OpenVINOBackend", "TorchScriptBackend"]

logger = logging.getLogger(__name__)


class Backend(abc.ABC):
    """Common part of the backends: the file, its metadata, and the input-shape check.

    Attributes:
        path: the file; info: its metadata document (:mod:`cspdet.runtime.metadata`); meta: its
            :class:`cspdet.models.DetectorMeta`; img_size: (H, W) it was exported at; dynamic: any batch and any
            multiple-of-stride size; batch: the fixed batch size of a static export (None when dynamic).
    """

    name = "backend"

    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        self.path, self.info = path, info
        self.meta = info["meta_obj"]
        self.img_size = tuple(info["img_size"])
        self.dynamic = bool(info["dynamic"])
        self.batch = None if self.dynamic else int(info.get("batch") or 1)

    def check_size(self, hw: tuple[int, int]) -> None:
        """Raise :class:`ExportUsageError` unless the file accepts (H, W) inputs."""
        if not self.dynamic and tuple(hw) != self.img_size:
            h, w = self.img_size
            raise ExportUsageError(f"{self.path.name} was exported for {h}x{w} inputs without --dynamic; got "
                                   f"{hw[0]}x{hw[1]} (use img size {h} {w}, or re-export with --dynamic)")

    def check(self, images: Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ExportUsageError(f"{self.path.name}: expects images (B, 3, H, W), got {tuple(images.shape)}")
        self.check_size(tuple(images.shape[-2:]))

    @abc.abstractmethod
    def run(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) float32 contiguous -> the graph's output, on this runtime."""

    def __call__(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) float32 RGB 0..255 -> the graph output: (B, N, 5 + C) decoded predictions, or (B, max_det, 6)
        detections for an ``--nms`` export. A static batch size is served by splitting / zero-padding the batch."""
        self.check(images)
        images = images.float().contiguous()
        if self.batch is None or images.shape[0] == self.batch:
            return self.run(images)
        outs = []
        for start in range(0, images.shape[0], self.batch):
            chunk = images[start:start + self.batch]
            n = chunk.shape[0]
            if n < self.batch:
                chunk = torch.cat((chunk, chunk.new_zeros((self.batch - n, *chunk.shape[1:]))))
            outs.append(self.run(chunk)[:n])
        return torch.cat(outs)


class OnnxBackend(Backend):
    """ONNX Runtime on CPU (``CPUExecutionProvider``), its intra-op threads told not to spin between runs."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        ort = require("onnxruntime", "to run .onnx models")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # After each run ORT's pool busy-waits for more work by default. Between two images the predictor decodes,
        # letterboxes and post-processes on the same cores, and the spinning threads take them (a quarter of the end
        # to end time per image on 2 cores; benchmarks/results/measurements.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 -- corrupt / truncated protobuf, unsupported ops, ...
            raise ExportError(f"{path}: cannot load the ONNX model: {_line(err)}") from None
        props = session.get_modelmeta().custom_metadata_map
        super().__init__(path, parse_info(props.get(INFO_KEY), str(path)))
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def run(self, images: Tensor) -> Tensor:
        out = self.session.run([self.output_name], {self.input_name: images.cpu().numpy()})[0]
        return torch.from_numpy(out)


_OPENVINO_CORE: list[Any] = []  # the process's one openvino.Core, made on first use (see _openvino_core)
_OPENVINO_CORE_LOCK = threading.Lock()


def _openvino_core() -> Any:
    """The process's one ``openvino.Core``, shared by every :class:`OpenVINOBackend` and never released.

    Why one, kept until exit: each Core loads a CPU plugin of its own, and the plugin (OpenVINO 2025.x / 2026.x,
    ``intel_cpu/src/sigstack_manager.cpp``) installs a fresh alternate signal stack on the thread that creates it;
    when destroyed, it restores the previous stack only if its own is still the current one, and unmaps its own
    either way. Two Cores destroyed in the order they were made (two backends of one test or one benchmark, freed
    first to last) so leave the thread's alternate signal stack pointing at unmapped memory, and the next signal
    handled on it -- every Python-level handler runs there (SA_ONSTACK since CPython 3.10), e.g. torch DataLoader's
    SIGCHLD handler when any child process exits -- kills the process with SIGSEGV and no traceback
    (``benchmarks/results/openvino_bf16_crash.md``). One Core that lives as long as the process never unmaps a stack
    that another plugin saved, and loads the plugin once.
    """
    with _OPENVINO_CORE_LOCK:
        if not _OPENVINO_CORE:
            ov = require("openvino", "to run OpenVINO .xml models")
            _OPENVINO_CORE.append(ov.Core())
        return _OPENVINO_CORE[0]


class OpenVINOBackend(Backend):
    """OpenVINO runtime on CPU (latency hint).

    A dynamic model runs any input shape on its dynamic compilation; a shape that arrives :data:`SPECIALISE_AFTER`
    times in a row (the frames of a video, a folder of same-size photos) gets a static compilation of its own, kept
    for the :data:`MAX_SPECIALISED` most recent such shapes. Static kernels run faster than dynamic ones but a
    compilation costs a fraction of a second (numbers in ``benchmarks/results/measurements.md``), so only a run of
    one shape earns it; mixed shapes (a folder of photos of several aspect ratios under the predictor's rect
    letterbox) stay on the dynamic compilation and never pay a compile.

    ``precision``: ``fp32`` (default: the outputs equal PyTorch's to ~1e-5), ``bf16`` (OpenVINO's own default on
    CPUs with native bf16: much faster there, scores move by ~1e-2) or ``auto`` (bf16 only where the CPU
    has native bf16; see :func:`cspdet.runtime.cpu.resolve_precision`).
    """

    name = "openvino"
    SPECIALISE_AFTER = 8
    MAX_SPECIALISED = 4

    def __init__(self, path: Path, threads: int | None = None, precision: str = "fp32") -> None:
        if not path.with_suffix(".bin").is_file():
            raise ExportError(f"{path}: the OpenVINO weights file {path.with_suffix('.bin').name} is missing beside it")
        core = _openvino_core()
        try:
            model = core.read_model(str(path))
        except Exception as err:  # noqa: BLE001 - any runtime's own error becomes one line
            raise ExportError(f"{path}: cannot load the OpenVINO model: {_line(err)}") from None
        text = model.get_rt_info([INFO_KEY]).astype(str) if model.has_rt_info([INFO_KEY]) else None
        super().__init__(path, parse_info(text, str(path)))
        # f32 explicitly unless bf16 is asked for: on CPUs with native bf16 (AMX / AVX512-BF16) OpenVINO otherwise
        # runs fp32 models in bf16, ~1e-2 px off PyTorch; an int8 model keeps its int8 layers either way.
        self.precision = resolve_precision(precision)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                                  "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[self.precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as err:  # noqa: BLE001 - any runtime's own error becomes one line
            raise ExportError(f"{path}: OpenVINO cannot compile the model for CPU: {_line(err)}") from None
        self.request = self.compiled.create_infer_request()
        self._core, self._model, self._config = core, model, config
        self._streak: tuple[tuple[int, ...] | None, int] = (None, 0)  # the last shape, how many times in a row
        self._failed: set[tuple[int, ...]] = set()
        self._static: OrderedDict[tuple[int, ...], Any] = OrderedDict()  # shape -> infer request, LRU order

    def _request_for(self, shape: tuple[int, ...]) -> Any:
        """The infer request for an input shape: its static compilation if it has one (or has now earned one)."""
        if not self.dynamic:
            return self.request
        last, count = self._streak
        self._streak = (shape, count + 1 if shape == last else 1)
        request = self._static.get(shape)
        if request is not None:
            self._static.move_to_end(shape)
            return request
        if self._streak[1] < self.SPECIALISE_AFTER or shape in self._failed:
            return self.request
        model = self._model.clone()
        model.reshape(list(shape))
        try:
            request = self._core.compile_model(model, "CPU", self._config).create_infer_request()
        except Exception as err:  # noqa: BLE001 -- the dynamic compilation runs every shape: fall back to it
            logger.warning("%s: OpenVINO cannot compile a static %s specialisation (%s); that shape stays on the "
                           "dynamic model", self.path.name, "x".join(map(str, shape)), _line(err))
            self._failed.add(shape)
            return self.request
        self._static[shape] = request
        if len(self._static) > self.MAX_SPECIALISED:
            self._static.popitem(last=False)
        return request

    def run(self, images: Tensor) -> Tensor:
        x = images.cpu().numpy()
        request = self._request_for(tuple(x.shape))
        request.infer({0: x})
        return torch.from_numpy(np.array(request.get_output_tensor(0).data, copy=True))


class TorchScriptBackend(Backend):
    """A TorchScript file (traced graph), run by PyTorch on ``device``."""

    name = "torchscript"

    def __init__(self, path: Path, device: str | torch.device = "cpu") -> None:
        extra = {f"{INFO_KEY}.json": ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
                module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        except Exception as err:  # noqa: BLE001 -- not a zip, truncated archive, a plain checkpoint, ...
            raise ExportError(f"{path}: cannot load the TorchScript model: {_line(err)}") from None
        text = extra[f"{INFO_KEY}.json"]
        super().__init__(path, parse_info(text.decode() if isinstance(text, bytes) else text, str(path)))
        self.module = module.eval()
        self.device = torch.device(device)

    @torch.inference_mode()
    def run(self, images: Tensor) -> Tensor:
        return self.module(images.to(self.device))


def _line(err: Exception, limit: int = 240) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


class DeployedDetector(ModelFacade):
    """A backend in the place of a :class:`cspdet.models.Detector` (eval only).

    ``forward(images)`` -> the graph output; :meth:`predict` -> per-image ``{"boxes", "scores", "labels"}`` through
    the same post-processing functions as ``Detector.predict``. A zero-size parameter records the device, so code
    that asks ``next(model.parameters()).device`` works unchanged.
    """

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.backend = backend
        self.meta = backend.meta
        info = backend.info
        self.format, self.output = info["format"], info["output"]
        self._nms_free = bool(info["nms_free"])
        self.head_kind = info.get("head")
        #: the evaluation convention of the head the file was exported from (its metadata)
        # (files written before the conf / iou / max_det entries keep HeadEvalDefaults' values, which every head had)
        base = HeadEvalDefaults()
        self._eval_defaults = HeadEvalDefaults(
            conf=float(info.get("eval_conf", base.conf)), iou=float(info.get("eval_iou", base.iou)),
            max_det=int(info.get("eval_max_det", base.max_det)),
            multi_label=bool(info.get("eval_multi_label", False)), nms_free=self._nms_free)
        self._device = nn.Parameter(torch.empty(0, device=getattr(backend, "device", "cpu")), requires_grad=False)

    @property
    def num_classes(self) -> int:
        return int(self.backend.info["num_classes"])

    @property
    def eval_defaults(self) -> HeadEvalDefaults:
        return self._eval_defaults

    @property
    def nms_free(self) -> bool:
        return self._nms_free

    @nms_free.setter
    def nms_free(self, value: bool) -> None:
        if bool(value) != self._nms_free:
            mode = "the NMS-free one-to-one branch" if self._nms_free else "NMS predictions"
            raise ExportUsageError(f"{self.backend.path.name}: this export holds {mode} only; re-export the "
                                   "checkpoint for the other mode")

    @property
    def fixed_input_size(self) -> tuple[int, int] | None:
        """(H, W) of a static export (the only size it takes); None when it takes any multiple of the stride."""
        return None if self.backend.dynamic else self.backend.img_size

    def check_input_size(self, hw: tuple[int, int]) -> None:
        """Raise :class:`ExportUsageError` (a ValueError) unless the file accepts (H, W) inputs (``Predictor`` asks
        at construction, so a wrong ``--img-size`` fails before the first image)."""
        self.backend.check_size(hw)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) float RGB 0..255 -> (B, N, 5 + C) decoded predictions (or (B, max_det, 6) for ``--nms``)."""
        return self.backend(images)

    def predictions(self, images: Tensor) -> Predictions:
        """(B, 3, H, W) float RGB 0..255 -> the file's predictions read back as a record (not for ``--nms``
        exports, which hold detections)."""
        if self.output == "dets":
            raise ExportUsageError(f"{self.backend.path.name} holds detections after in-graph NMS, not predictions")
        return from_deploy_layout(self.backend(images))

    @torch.inference_mode()
    def predict(self, images: Tensor, conf: float = 0.25, iou: float = 0.45, max_det: int = 300,
                classes: Sequence[int] | None = None, agnostic: bool = False, pre_nms_topk: int | None = None,
                multi_label: bool = False) -> list[dict[str, Tensor]]:
        """As ``Detector.predict``; an ``--nms`` export's rows are filtered by ``conf`` / ``classes`` (its in-graph
        IoU / max_det applied, :func:`cspdet.det.filter_dets`), an NMS-free export gets its top-k, others
        cspdet's class-aware NMS."""
        if self.output == "dets":
            return filter_dets(self.backend(images), conf, max_det, classes)
        return super().predict(images, conf, iou, max_det, classes, agnostic, pre_nms_topk, multi_label)
