"""What an exported file holds: the inference graph of a detector and the metadata that travels with it.

The graph (:class:`ExportGraph`) is the eval forward of a Conv+BN-fused copy of the detector, up to the head's
:class:`~cspdet.det.predictions.Predictions` record, then one of:

* default (``output == "preds"``): the record in the deploy layout every exported file has held,
  :func:`cspdet.det.predictions.to_deploy_layout` -- (B, 3, H, W) float32 RGB 0..255 -> (B, N, 5 + C) ``cx, cy,
  w, h`` (input px), objectness (1 for heads without it), class probabilities -- for the branch the head runs (the
  one-to-one branch of an NMS-free ``csptal_*`` model). A runtime reads it back with
  :func:`~cspdet.det.predictions.from_deploy_layout` and applies cspdet's own post-processing, so the detections
  equal PyTorch's.
* ``nms=True`` (``output == "dets"``): the post-processing inside the graph for runtimes that want one
  self-contained model -- (B, max_det, 6) ``x1, y1, x2, y2, score, label`` rows sorted by decreasing score and
  padded with zero rows (score 0). Single-label class-aware NMS with the export's conf / IoU
  (:func:`cspdet.det.postprocess.nms_dets`); the NMS-free head gets its top-k instead, with no NMS at all
  (:func:`cspdet.det.nms_free.topk_dets`).

The metadata (:func:`export_info`) is one JSON document stored under the key :data:`INFO_KEY`: ONNX
``metadata_props``, OpenVINO ``rt_info``, a TorchScript extra file. :func:`cspdet.runtime.metadata.parse_info`
validates it on load.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn

from ..det.nms_free import topk_dets
from ..det.postprocess import nms_dets
from ..det.predictions import to_deploy_layout

from ..runtime.metadata import EXPORT_INFO_VERSION, INFO_KEY, dumps_info, parse_info

__all__ = ["EXPORT_INFO_VERSION", "INFO_KEY", "ExportGraph", "dumps_info", "export_info", "parse_info"]



class ExportGraph(nn.Module):
    """The module that is traced for export.

    Args:
        detector: a :class:`cspdet.models.Detector`; a fused eval copy is taken (the original is not touched).
        nms: put the post-processing inside the graph (see the module docstring).
        conf, iou, max_det: that post-processing's settings (used only with ``nms``).

    Shapes: ``forward(images (B, 3, H, W) float32)`` -> (B, N, 5 + C), or with ``nms`` (B, max_det, 6).
    """

    def __init__(self, detector: nn.Module, nms: bool = False, conf: float = 0.25, iou: float = 0.45,
                 max_det: int = 300) -> None:
        super().__init__()
        from ..models import fuse_conv_bn

        self.detector = fuse_conv_bn(copy.deepcopy(detector).float().eval())
        for p in self.detector.parameters():
            p.requires_grad_(False)
        self.nms, self.conf, self.iou, self.max_det = bool(nms), float(conf), float(iou), int(max_det)
        self.nms_free = bool(getattr(self.detector, "nms_free", False))

    def forward(self, images: Tensor) -> Tensor:
        preds = self.detector.predictions(images)
        if not self.nms:
            return to_deploy_layout(preds, self.detector.num_classes)
        if self.nms_free:  # the one-to-one head's top-k; rows below conf keep their score (the runtime filters)
            return topk_dets(preds, self.max_det)
        return nms_dets(preds, self.conf, self.iou, self.max_det)


def export_info(detector: nn.Module, fmt: str, img_size: tuple[int, int], dynamic: bool, batch: int | None,
                nms: dict[str, float] | None = None, precision: str = "fp32", opset: int | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata document of an export of ``detector`` (plain JSON data).

    Fields: ``cspdet_export`` (layout version), ``format``, ``precision`` (fp32 | int8), ``meta``
    (:class:`cspdet.models.DetectorMeta` as data: class names, category ids, img_size, channel order, pixel range,
    strides, default conf / IoU / max_det, preset, source, dataset), ``head`` (head kind, e.g. ``yolox`` / ``tal``),
    ``num_classes``, ``nms_free``, ``eval_multi_label`` / ``eval_conf`` / ``eval_iou`` / ``eval_max_det`` (the head's
    :class:`~cspdet.models.HeadEvalDefaults`), ``output`` (``preds`` or ``dets``), ``nms`` (the in-graph
    settings or null), ``input`` (name, shape with null for dynamic axes, dtype, layout), ``img_size`` (H, W of the
    export), ``dynamic``, ``batch`` (null when dynamic), ``spec`` (the network as data, provenance), ``opset``.
    """
    from .. import __version__

    head = detector.head
    spec = None
    try:
        spec = detector.spec.to_dict()
    except Exception:  # noqa: BLE001 - a hand-made part without a spec: only the provenance is missing
        spec = None
    meta = detector.meta.to_dict()
    h, w = img_size
    info = {
        "cspdet_export": EXPORT_INFO_VERSION, "cspdet_version": __version__, "format": fmt, "precision": precision,
        "meta": meta, "head": getattr(getattr(head, "spec", None), "kind", type(head).__name__),
        "num_classes": int(detector.num_classes), "nms_free": bool(getattr(detector, "nms_free", False)),
        "eval_multi_label": bool(head.eval_defaults.multi_label), "eval_conf": float(head.eval_defaults.conf),
        "eval_iou": float(head.eval_defaults.iou), "eval_max_det": int(head.eval_defaults.max_det),
        "output": "dets" if nms else "preds", "nms": nms,
        "input": {"name": "images", "shape": [None if dynamic else batch, 3, None if dynamic and not nms else h,
                                              None if dynamic and not nms else w],
                  "dtype": "float32", "layout": "NCHW", "channel_order": meta.get("channel_order", "RGB"),
                  "pixel_range": meta.get("pixel_range", [0.0, 255.0])},
        "img_size": [int(h), int(w)], "dynamic": bool(dynamic), "batch": None if dynamic else int(batch or 1),
        "opset": opset, "spec": spec,
    }
    info.update(extra or {})
    return info
