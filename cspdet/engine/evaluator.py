"""COCO box evaluation of a detector: run it over a validation loader and score what it finds.

The flow for one validation image::

    loader batch (letterboxed uint8, ratio, orig size) ─► Detector.predict (xyxy, input px, labels 0..C-1)
      ─► Letterbox.invert (/ ratio, clip to the original image) ─► xywh + original category id
      ─► COCO results list ─► coco_metrics.coco_evaluate (12 stats + per-class AP table)

The scoring itself (pycocotools / faster-coco-eval, the per-class table, ``metrics.json``) is
:mod:`cspdet.engine.coco_metrics`, the pictures :mod:`cspdet.engine.plots`; this module is the loop around
them, including the distributed gather.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO

from ..data.letterbox import Letterbox
from ..fileio import atomic_write
from ..models.contracts import HeadEvalDefaults
from ..runtime.callbacks import CallbackList
from ..runtime.checkpoint import CheckpointError
from ..runtime.open import open_model
from ..runtime.weights import detector_from_checkpoint, read_weights
from .build import build_detector, init_weights
from .coco_metrics import COCOMetrics, EvaluationError, coco_evaluate
from .distributed import all_gather_objects, broadcast_object, get_rank, is_distributed

__all__ = ["COCOEvaluator", "detections_to_coco", "load_detector_for_eval"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------- model -> results


def detections_to_coco(
    boxes: torch.Tensor | np.ndarray,
    scores: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    image_id: int,
    category_ids: Sequence[int],
    ratio: float = 1.0,
    orig_size: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """One image's detections as COCO result dicts.

    Args:
        boxes: (K, 4) xyxy in letterboxed input px.
        scores: (K,).
        labels: (K,) contiguous class indices 0..C-1.
        image_id: original image id.
        category_ids: contiguous index -> original category id.
        ratio: letterbox ratio r (input px = original px * r); boxes are divided by it.
        orig_size: (h, w) of the original image; boxes are clipped to it when given.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h] original px (3 decimals), "score" (5 decimals)}]``.
        The rounding keeps the results json small; scores are computed from these rounded values, so scoring
        the written file gives the same numbers.
    """
    b = Letterbox.invert(_np(boxes).astype(np.float64).reshape(-1, 4), ratio, orig_size)
    b[:, 2:] -= b[:, :2]
    s = _np(scores).astype(np.float64).reshape(-1)
    lab = _np(labels).astype(np.int64).reshape(-1)
    if lab.size and (lab.min() < 0 or lab.max() >= len(category_ids)):
        raise EvaluationError(f"model predicted class {int(lab.max())} but the dataset has {len(category_ids)} classes")
    cats = np.asarray(category_ids, dtype=np.int64)[lab] if lab.size else lab
    return [
        {"image_id": int(image_id), "category_id": int(c), "bbox": [round(float(v), 3) for v in box],
         "score": round(float(sc), 5)}
        for box, sc, c in zip(b, s, cats)
    ]


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class COCOEvaluator:
    """Evaluate a detector on a validation loader (``cspdet.data.build_val_loader``) with COCO box metrics.

    Args:
        dataloader: yields dicts with "images" uint8 (B, 3, H, W) RGB letterboxed, "image_ids" (B,),
            "ratios" (B,) and "orig_sizes" (B, 2) (h, w).
        coco_gt: ground truth with original ids (default: ``dataloader.dataset.coco_gt()``).
        category_ids: contiguous label -> original category id (default: the dataset's).
        class_names: contiguous label -> name (default: the dataset's).
        conf, iou, max_det: ``Detector.predict`` settings; None (default) = the evaluated model's own
            (``model.eval_defaults``, the :class:`~cspdet.models.HeadEvalDefaults` of its head: conf 0.001, iou 0.65,
            300 per image for the YOLOX and task-aligned heads, so YOLOX's mAP is reproduced), or those values for a
            model without ``eval_defaults``. A value given here wins over the head's.
        backend: "pycocotools" or "faster_coco_eval".
        pre_nms_topk: at most this many top-scoring points per image enter NMS (``Detector.predict``).
            None (default) = no cap, as YOLOX: the mAP equals YOLOX's. At conf 0.001 thousands of points pass;
            a cap of ~1000 makes NMS several times faster but can drop detections in crowded images
            (``benchmarks/bench_postprocess.py`` measures both).
        nms_free: score the one-to-one branch's top-k (True) or the NMS path (False) of a head that has both;
            None = the model's current mode.
        multi_label: every class above ``conf`` of a point is a candidate; None = the head's own evaluation
            convention (``model.eval_defaults.multi_label``: single-label for the YOLOX head, so mAP equals YOLOX's;
            multi-label for the task-aligned head, as YOLOv8's validator).
        callbacks: objects with an ``on_val_end(evaluator, metrics)`` hook, called at the end of every
            :meth:`evaluate` on every process (:mod:`cspdet.runtime.callbacks`); a :class:`CallbackList` is shared,
            not copied (a training run passes its own).

    Under ``torch.distributed`` each rank predicts its shard and rank 0 scores the gathered results
    (other ranks get the same metrics broadcast back).
    """

    def __init__(
        self,
        dataloader: Iterable[dict[str, torch.Tensor]],
        coco_gt: COCO | None = None,
        category_ids: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        backend: str = "pycocotools",
        pre_nms_topk: int | None = None,
        nms_free: bool | None = None,
        multi_label: bool | None = None,
        callbacks: Iterable[Any] | None = None,
    ):
        dataset = getattr(dataloader, "dataset", None)
        if coco_gt is None or category_ids is None or class_names is None:
            if dataset is None or not hasattr(dataset, "coco_gt"):
                raise TypeError("COCOEvaluator: pass coco_gt, category_ids and class_names, or a loader whose "
                                "dataset provides coco_gt(), category_ids and class_names")
        self.dataloader = dataloader
        self.coco_gt = coco_gt if coco_gt is not None else dataset.coco_gt()
        self.category_ids = list(category_ids if category_ids is not None else dataset.category_ids)
        self.class_names = list(class_names if class_names is not None else dataset.class_names)
        if len(self.class_names) != len(self.category_ids):
            raise ValueError(f"COCOEvaluator: {len(self.class_names)} class names but "
                             f"{len(self.category_ids)} category ids")
        self.conf, self.iou, self.max_det, self.backend = conf, iou, max_det, backend
        if pre_nms_topk is not None and (isinstance(pre_nms_topk, bool) or not isinstance(pre_nms_topk, int)
                                         or pre_nms_topk < 1):
            raise ValueError(f"COCOEvaluator: pre_nms_topk must be None or a positive integer, got {pre_nms_topk!r}")
        self.pre_nms_topk = pre_nms_topk
        self.nms_free, self.multi_label = nms_free, multi_label
        self.last_timing: dict[str, float] = {}
        #: conf / iou / max_det the last :meth:`predict` used (this evaluator's, else the model's defaults)
        self.last_settings: dict[str, Any] = {}
        self.callbacks = CallbackList.of(callbacks)

    @classmethod
    def from_config(cls, cfg: Any, rank: int = 0, world_size: int = 1, device: str | torch.device = "cpu",
                    **kwargs: Any) -> COCOEvaluator:
        """Build the val dataset and loader that ``cfg.data`` / ``cfg.eval`` describe (a ``cspdet.config.Config``)
        for a model on ``device`` (an unset ``data.workers`` means no loader workers on a CPU, as in training);
        ``kwargs`` (e.g. ``pre_nms_topk``) go to the constructor."""
        from ..data import build_dataset, build_val_loader
        from .resources import plan_workers

        dataset = build_dataset(cfg.data.dataset, cfg.eval.split, strict=cfg.data.strict, cache=cfg.data.cache)
        workers = plan_workers(torch.device(device).type, cfg.data.workers)
        loader = build_val_loader(dataset, tuple(cfg.eval.img_size), cfg.eval.batch_size, workers,
                                  rank=rank, world_size=world_size)
        kwargs.setdefault("nms_free", cfg.eval.nms_free)
        kwargs.setdefault("multi_label", cfg.eval.multi_label)
        return cls(loader, conf=cfg.eval.conf, iou=cfg.eval.iou, max_det=cfg.eval.max_det, backend=cfg.eval.backend,
                   **kwargs)

    def settings_for(self, model: torch.nn.Module) -> dict[str, Any]:
        """The ``conf``, ``iou``, ``max_det`` and ``multi_label`` that ``model`` is evaluated with: this evaluator's
        where set, the rest from the model's head (``model.eval_defaults``, of its head or of a deployed file's
        metadata; :class:`~cspdet.models.HeadEvalDefaults`' own values for a model that has none)."""
        net = getattr(model, "module", model)
        defaults = getattr(net, "eval_defaults", None) or HeadEvalDefaults()
        return {"conf": float(defaults.conf if self.conf is None else self.conf),
                "iou": float(defaults.iou if self.iou is None else self.iou),
                "max_det": int(defaults.max_det if self.max_det is None else self.max_det),
                "multi_label": bool(defaults.multi_label if self.multi_label is None else self.multi_label)}

    @torch.inference_mode()
    def predict(self, model: torch.nn.Module, progress: bool = False) -> dict[int, list[dict[str, Any]]]:
        """Run ``model`` over the loader.

        Returns:
            image id -> that image's COCO result dicts (an image without detections maps to ``[]``).
        """
        net = getattr(model, "module", model)  # DDP / EMA wrappers keep the detector in .module
        was_training, was_nms_free = net.training, getattr(net, "nms_free", False)
        net.eval()
        settings = self.settings_for(net)
        multi_label = settings.pop("multi_label")
        # conf / iou / max_det as resolved; the other options reach predict only when set, so any model with
        # predict(images, conf, iou, max_det) works.
        extra: dict[str, Any] = {} if self.pre_nms_topk is None else {"pre_nms_topk": self.pre_nms_topk}
        if multi_label:
            extra["multi_label"] = True
        if self.nms_free is not None:
            net.nms_free = self.nms_free
        self.last_settings = {**settings, "multi_label": multi_label,
                              "nms_free": bool(getattr(net, "nms_free", False))}
        device = next(net.parameters()).device
        results: dict[int, list[dict[str, Any]]] = {}
        n_images, t_model = 0, 0.0
        batches = self.dataloader
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="eval", unit="batch", leave=False)
        try:
            for batch in batches:
                images = batch["images"].to(device, non_blocking=True).float()
                tic = time.perf_counter()
                dets = net.predict(images, **settings, **extra)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t_model += time.perf_counter() - tic
                for j, det in enumerate(dets):
                    image_id = int(batch["image_ids"][j])
                    h, w = (int(v) for v in batch["orig_sizes"][j])
                    if h <= 0 or w <= 0:  # an unreadable image the loader replaced by a grey placeholder
                        results[image_id] = []
                        continue
                    results[image_id] = detections_to_coco(
                        det["boxes"], det["scores"], det["labels"], image_id, self.category_ids,
                        ratio=float(batch["ratios"][j]), orig_size=(h, w),
                    )
                n_images += images.shape[0]
        finally:
            net.train(was_training)
            if self.nms_free is not None:
                net.nms_free = was_nms_free
        self.last_timing = {"images": n_images, "ms_per_image": 1000 * t_model / max(n_images, 1)}
        return results

    def evaluate(
        self, model: torch.nn.Module, output_dir: str | os.PathLike | None = None, plots: bool = True,
        progress: bool = False,
    ) -> COCOMetrics:
        """Predict, gather (distributed), score. Rank 0 writes ``detections.json``, ``metrics.json`` and (with
        ``plots``) the pictures of :data:`cspdet.engine.plots.EVAL_PLOTS` -- PR, F1, P and R curves, confusion
        matrices -- to ``output_dir`` when given. Then every process fires ``on_val_end(self, metrics)``.

        Returns:
            :class:`COCOMetrics` (on every rank).
        """
        local = self.predict(model, progress=progress)
        # a distributed sampler's padding repeats images on several ranks: the merge keeps each image once
        per_image: dict[int, list[dict[str, Any]]] = {}
        for part in all_gather_objects(local):
            for image_id, dets in part.items():
                per_image.setdefault(image_id, dets)
        metrics: COCOMetrics | None = None
        failure: str | None = None
        if get_rank() == 0:
            try:
                metrics = self._score_and_write(per_image, output_dir, plots)
            except Exception as err:  # noqa: BLE001 - every rank must leave the broadcast below, then all raise
                if not is_distributed():
                    raise
                failure = f"{type(err).__name__}: {err}"
        metrics, failure = broadcast_object((metrics, failure))
        if failure is not None:
            raise EvaluationError(f"evaluation failed on rank 0: {failure}")
        self.callbacks.fire("on_val_end", self, metrics)
        return metrics

    def _score_and_write(
        self, per_image: dict[int, list[dict[str, Any]]], output_dir: str | os.PathLike | None, plots: bool
    ) -> COCOMetrics:
        """Rank 0: score the gathered detections and write the output files."""
        detections = [d for image_id in sorted(per_image) for d in per_image[image_id]]
        metrics = coco_evaluate(self.coco_gt, detections, backend=self.backend, class_names=self.class_names,
                                check_entries=False)
        metrics.extra.update({**self.last_settings,
                              "pre_nms_topk": self.pre_nms_topk,
                              "ms_per_image": round(self.last_timing.get("ms_per_image", 0.0), 2)})
        if len(per_image) < len(self.coco_gt.getImgIds()):
            logger.warning("evaluated %d of %d ground-truth images (the others were not in the loader)",
                           len(per_image), len(self.coco_gt.getImgIds()))
        if output_dir is not None:
            out = Path(output_dir)
            atomic_write(out / "detections.json", json.dumps(detections))
            metrics.save_json(out / "metrics.json")
            if plots:
                self._write_plots(out, metrics, detections)
        return metrics

    def _write_plots(self, out: Path, metrics: COCOMetrics, detections: list[dict[str, Any]]) -> None:
        """The pictures of :func:`cspdet.engine.plots.write_eval_plots`. One that cannot be drawn is reported and
        skipped: the scores are already written, and the final evaluation of a training run must not lose
        ``last.pt`` to a drawing. A file that cannot be written (disk full, ...) raises like every other output."""
        from ..fileio import OutputError
        from .plots import write_eval_plots  # matplotlib: only when pictures are asked for

        try:
            write_eval_plots(out, metrics, self.coco_gt, detections)
        except OutputError:
            raise
        except Exception as err:  # noqa: BLE001 - see the docstring
            logger.warning("could not draw the evaluation plots in %s (%s: %s)", out, type(err).__name__, err)


def load_detector_for_eval(
    weights: str | os.PathLike, cfg: Any, class_names: Sequence[str], device: str | torch.device = "cpu",
    **fast: Any,
) -> torch.nn.Module:
    """The detector of checkpoint ``weights``, checked against the dataset it is evaluated on.

    Args:
        weights: cspdet detector checkpoint (its own spec says which model to build; ``cfg.model`` is not used), an
            exported file (``.onnx`` / OpenVINO ``.xml`` / ``.torchscript``, run by its runtime backend),
            or an official YOLOX checkpoint (``{"model": state_dict}``), which is loaded into the model
            ``cfg.model`` describes (e.g. ``cspdarknet_s`` for ``yolox_s.pth``).
        cfg: the ``cspdet.config.Config`` of the evaluation.
        class_names: the evaluation dataset's classes; their number must equal the model's.
        fast: ``precision`` / ``channels_last`` for a cspdet checkpoint: the fused PyTorch CPU fast path
            (:func:`cspdet.runtime.open_model`); without them the checkpoint's model runs unfused, exactly
            as the training run evaluated it.

    Returns:
        the detector in eval mode on ``device``.

    Raises:
        CheckpointError: unreadable / non-detector checkpoint, or a class count that differs from the dataset's.
    """
    file = read_weights(weights)
    if file.exported:  # .onnx / .xml / .torchscript: the exact file that is deployed
        model = open_model(file, device=device)
    elif file.kind == "yolox":
        model = build_detector(cfg.model)
        init_weights(model, dataclasses.replace(cfg.model, weights=str(weights), weights_format="yolox"),
                     allow_class_change=False)  # scoring needs the weights' own class layers
    elif fast:
        model = open_model(file, device=device, fuse=True, **fast)
    else:
        model, _ = detector_from_checkpoint(weights, device=device, ckpt=file.obj)
    if model.num_classes != len(class_names):
        raise CheckpointError(f"{weights}: model has {model.num_classes} classes but the evaluation dataset has "
                              f"{len(class_names)} ({cfg.data.dataset})")
    stored_names = model.meta.class_names
    if list(stored_names) != list(class_names) and stored_names != [str(i) for i in range(model.num_classes)]:
        diff = next(i for i, (a, b) in enumerate(zip(stored_names, class_names)) if a != b)
        logger.warning("%s: class names differ from the dataset's (class %d: %r in the checkpoint, %r in the "
                       "dataset); scoring assumes the same class order", weights, diff, stored_names[diff],
                       class_names[diff])
    return model.to(device).eval()
