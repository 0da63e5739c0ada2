"""The inference-model contract: what ``Predictor``, ``COCOEvaluator`` and the benchmark use of a model.

Three classes satisfy it: :class:`cspdet.models.Detector` (the PyTorch network), :class:`~cspdet.runtime.cpu.
FastCPUDetector` (a detector run channels_last / bf16) and :class:`~cspdet.runtime.backends.DeployedDetector` (an
exported file on ONNX Runtime, OpenVINO, TorchScript or a registered format). The last two share their facade
through :class:`ModelFacade`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..det.postprocess import postprocess
from ..det.predictions import Predictions, from_deploy_layout
from ..models.contracts import HeadEvalDefaults
from ..models.detector import StrideMultipleInput

__all__ = ["InferenceModel", "ModelFacade"]


@runtime_checkable
class InferenceModel(Protocol):
    """A detector ready for inference.

    Attributes:
        meta: :class:`cspdet.models.DetectorMeta` (class names, category ids, img_size, strides, default conf / IoU /
            max_det, the dataset it was trained on).
        num_classes: C; strides: the prediction levels' strides (inputs are multiples of the largest).
        nms_free: predictions come from a one-to-one branch as top-k with no NMS (settable where the model has both).
        fixed_input_size: (H, W) of a model that takes only that size (a static export), else None (any multiple of
            the largest stride).
        eval_defaults: :class:`cspdet.models.HeadEvalDefaults`, the evaluation convention of the model's head
            (multi-label or not, NMS-free or not); a deployed file has it from its metadata.
    """

    meta: Any

    @property
    def eval_defaults(self) -> HeadEvalDefaults: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def strides(self) -> tuple[int, ...]: ...

    @property
    def nms_free(self) -> bool: ...

    @property
    def fixed_input_size(self) -> tuple[int, int] | None: ...

    def check_input_size(self, hw: tuple[int, int]) -> None:
        """Raise ``ValueError`` (one line) unless the model takes (H, W) inputs."""

    def predictions(self, images: Tensor) -> Predictions:
        """(B, 3, H, W) float RGB 0..255 -> the decoded :class:`~cspdet.det.predictions.Predictions` (before
        post-processing)."""

    def predict(self, images: Tensor, conf: float = 0.25, iou: float = 0.45, max_det: int = 300,
                classes: Sequence[int] | None = None, agnostic: bool = False, pre_nms_topk: int | None = None,
                multi_label: bool = False) -> list[dict[str, Tensor]]:
        """(B, 3, H, W) float RGB 0..255 -> B dicts of ``boxes`` (K, 4) xyxy input px, ``scores`` (K,), ``labels``
        (K,) int64."""


class ModelFacade(StrideMultipleInput, nn.Module):
    """The part of :class:`InferenceModel` that every wrapper around a network shares: ``num_classes`` and
    ``strides`` from :attr:`meta`, a free input size that is a multiple of the largest stride, and ``predict`` =
    :meth:`predictions` then :meth:`postprocess` (:func:`cspdet.det.postprocess` in the model's ``nms_free`` mode).

    Subclasses set ``self.meta`` and implement ``forward`` (the (B, N, 5 + C) deploy layout, which the default
    :meth:`predictions` reads back) or :meth:`predictions` (and override what differs).
    """

    meta: Any

    @property
    def num_classes(self) -> int:
        return len(self.meta.class_names)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(self.meta.strides)

    @property
    def eval_defaults(self) -> HeadEvalDefaults:
        return HeadEvalDefaults(nms_free=bool(self.nms_free))

    def predictions(self, images: Tensor) -> Predictions:
        """(B, 3, H, W) float RGB 0..255 -> :class:`~cspdet.det.predictions.Predictions` (default: ``forward``'s
        deploy layout read back with :func:`~cspdet.det.predictions.from_deploy_layout`)."""
        return from_deploy_layout(self(images))

    def postprocess(self, preds: Predictions | Tensor, conf: float, iou: float, max_det: int,
                    classes: Sequence[int] | None, agnostic: bool, pre_nms_topk: int | None,
                    multi_label: bool) -> list[dict[str, Tensor]]:
        """Predictions -> per-image detections: :func:`cspdet.det.postprocess` in this model's ``nms_free`` mode."""
        return postprocess(preds, conf, iou, max_det, classes, agnostic, pre_nms_topk, multi_label,
                           nms_free=bool(self.nms_free))

    @torch.inference_mode()
    def predict(self, images: Tensor, conf: float = 0.25, iou: float = 0.45, max_det: int = 300,
                classes: Sequence[int] | None = None, agnostic: bool = False, pre_nms_topk: int | None = None,
                multi_label: bool = False) -> list[dict[str, Tensor]]:
        """Detections for a batch, as ``Detector.predict``: (B, 3, H, W) float RGB 0..255 -> B dicts of ``boxes``
        (K, 4) xyxy input px, ``scores`` (K,), ``labels`` (K,) int64."""
        return self.postprocess(self.predictions(images), conf, iou, max_det, classes, agnostic, pre_nms_topk,
                                multi_label)
