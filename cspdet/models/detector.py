"""The detector: backbone -> neck -> head, described by a spec and carrying its metadata.

One image's path: (B, 3, H, W) RGB 0..255 float -> backbone feature maps (strides 8/16/32 for the presets) -> neck
maps with the same strides -> the head's raw outputs -> (training) the head's own assignment and losses, or (eval)
the head's :class:`~cspdet.det.predictions.Predictions` record -> (``predict``) :func:`cspdet.det.postprocess`
(score filter + class-aware NMS, or the NMS-free top-k of a one-to-one head). Any head kind registered in
:data:`~cspdet.models.HEADS` that implements :class:`~cspdet.models.contracts.DetectionHead` fits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..det.postprocess import postprocess
from ..det.predictions import Predictions, to_deploy_layout
from ..det.targets import Targets, as_targets
from .contracts import HeadEvalDefaults
from .cspnet import CSPNet
from .registry import ACTIVATIONS, BACKBONE_KINDS, HEADS, NECKS, NORMS, SpecError
from .spec import DetectorMeta, DetectorSpec

__all__ = ["Detector", "StrideMultipleInput"]


class StrideMultipleInput:
    """The input-size part of :class:`~cspdet.runtime.contracts.InferenceModel` for a network that takes any
    (H, W) multiple of its largest stride (what every network of the family takes; an exported static file
    overrides it). Needs ``strides``."""

    strides: Sequence[int]

    @property
    def fixed_input_size(self) -> tuple[int, int] | None:
        """None: any (H, W) multiple of the largest stride."""
        return None

    def check_input_size(self, hw: Sequence[int]) -> None:
        """Raise ``ValueError`` unless (H, W) are multiples of the largest stride."""
        stride = max(self.strides)
        if hw[0] % stride or hw[1] % stride:
            raise ValueError(f"input size {hw[0]}x{hw[1]} must be a multiple of the model stride {stride}")


class Detector(StrideMultipleInput, nn.Module):
    """Backbone + neck + head.

    Args:
        backbone: module mapping (B, 3, H, W) to a list of feature maps, finest first, at ``head.strides``
            (a ``features_only`` :class:`~cspdet.models.CSPNet`).
        neck: module mapping that list to a list of the same length (:class:`~cspdet.models.CSPPAN`, or the C2f /
            C3k2 PAN of the task-aligned presets).
        head: a :class:`~cspdet.models.contracts.DetectionHead` (YOLOX's
            :class:`~cspdet.models.yolox_head.DecoupledHead`, the task-aligned
            :class:`~cspdet.models.tal_head.TaskAlignedHead`, or a head of your own registered in
            :data:`~cspdet.models.HEADS`); owns its loss, decoding, schedule hook and evaluation defaults.
        meta: what the detector knows beyond its layers (class names, input size, thresholds, ...); default
            placeholder names ``"0".."C-1"``.

    A detector describes itself: ``detector.spec`` (:class:`~cspdet.models.spec.DetectorSpec`, data that
    :meth:`from_spec` builds the same layers from) and ``detector.meta`` (:class:`DetectorMeta`). Both travel in
    checkpoints.

    Input images are float (B, 3, H, W), RGB, values 0..255 (no mean/std), H and W multiples of the largest
    stride (32).

    * ``train()`` mode: ``detector(images, targets)`` -> the head's dict of scalar losses: ``loss`` (what to
      backpropagate) and the keys of ``head.loss_keys`` (YOLOX: ``iou_loss``, ``obj_loss``, ``cls_loss``,
      ``l1_loss``; plus ``num_fg``); ``targets`` a :class:`~cspdet.det.targets.Targets` (boxes (B, M, 4) xyxy input
      px, labels, mask), as the train loader's ``batch["targets"]``. The earlier ``detector(images, packed,
      target_mask)`` with a (B, M, 5) ``[cls, x1, y1, x2, y2]`` tensor still works, with a DeprecationWarning.
    * :meth:`predictions` -> the head's :class:`~cspdet.det.predictions.Predictions` (boxes xyxy input px, class
      scores, YOLOX's objectness): what post-processing, the evaluator and the exporters read.
    * ``eval()`` mode: ``detector(images)`` -> the same predictions in the deploy layout exported files hold,
      (B, N, 5 + C) ``cx, cy, w, h`` (input px), objectness (1 for heads without one) and class probabilities
      (:func:`~cspdet.det.predictions.to_deploy_layout`; kept so existing code and exports read it unchanged).
    * :meth:`predict` -> per-image ``{"boxes", "scores", "labels"}`` after post-processing.

    For inference, :func:`cspdet.models.fuse_conv_bn` folds every BatchNorm of the whole detector (backbone,
    neck, head) into its conv, in place: eval outputs and :meth:`predict` results stay the same (float32
    rounding), one op fewer per conv unit. Fuse a copy; the fused model can no longer train its BN.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: nn.Module, meta: DetectorMeta | None = None) -> None:
        super().__init__()
        if isinstance(backbone, CSPNet) and not backbone.features_only:
            raise ValueError(
                "Detector backbone: this CSPNet is a classifier (features_only=False) and would return logits; "
                "build it with features_only=True (out_indices at strides 8/16/32) to use it as a backbone"
            )
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.meta = meta if meta is not None else DetectorMeta.default(head.num_classes, head.strides)
        if len(self.meta.class_names) != head.num_classes:
            raise ValueError(f"Detector: {len(self.meta.class_names)} class names in meta for a head with "
                             f"{head.num_classes} classes")

    @classmethod
    def from_spec(cls, spec: DetectorSpec, meta: DetectorMeta | None = None) -> Detector:
        """Build the layers ``spec`` describes (randomly initialised, as the preset's family initialises them).

        Raises:
            SpecError (a ValueError): an unknown block / norm / activation / neck / head name, or parts that do
                not fit together (e.g. backbone strides that differ from the head's).
        """
        backbone = BACKBONE_KINDS.get(spec.backbone.kind).from_spec(spec.backbone)
        if list(backbone.out_strides) != list(spec.head.strides):
            raise SpecError(f"detector: backbone feature strides are {list(backbone.out_strides)}, the head's are "
                            f"{list(spec.head.strides)} (need [8, 16, 32]: the last three stages must downsample)")
        n = spec.neck
        neck = NECKS.get(n.kind)(backbone.out_channels, n.out_channels, num_blocks=n.num_blocks, depthwise=n.depthwise,
                                 norm=NORMS.get(n.norm), act=None if n.act is None else ACTIVATIONS.get(n.act),
                                 **n.options)
        head_cls = HEADS.get(spec.head.kind)
        if not callable(getattr(head_cls, "from_spec", None)):
            raise SpecError(f"head {spec.head.kind!r}: {getattr(head_cls, '__name__', head_cls)} has no from_spec(spec, "
                            "in_channels); a head kind must implement cspdet.models.contracts.DetectionHead")
        head = head_cls.from_spec(spec.head, list(neck.out_channels))
        return cls(backbone, neck, head, meta)

    @property
    def spec(self) -> DetectorSpec:
        """This detector as data. Raises SpecError when a part has no spec (a hand-made module)."""
        parts = {}
        for name in ("backbone", "neck", "head"):
            part = getattr(self, name)
            if not hasattr(type(part), "spec"):
                raise SpecError(f"Detector.{name}: {type(part).__name__} cannot describe itself as a spec (give it a "
                                "'spec' property, or build the detector from a DetectorSpec)")
            parts[name] = part.spec
        return DetectorSpec(**parts)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def strides(self) -> tuple[int, ...]:
        return self.head.strides

    def _check_images(self, images: Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"Detector expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
        s = max(self.strides)
        if images.shape[-2] % s or images.shape[-1] % s:
            raise ValueError(
                f"Detector input height and width must be multiples of {s} (the largest stride), got "
                f"{tuple(images.shape[-2:])}; letterbox/pad the images first"
            )

    @property
    def eval_defaults(self) -> HeadEvalDefaults:
        """The head's evaluation convention (:class:`~cspdet.models.contracts.HeadEvalDefaults`)."""
        return self.head.eval_defaults

    def predictions(self, images: Tensor) -> Predictions:
        """(B, 3, H, W) float RGB 0..255 -> the head's decoded :class:`~cspdet.det.predictions.Predictions` (in the
        current train / eval mode's forward; call in eval mode)."""
        self._check_images(images)
        return self.head.decode(self.head(self.neck(self.backbone(images))))

    def forward(
        self, images: Tensor, targets: Targets | Tensor | None = None, target_mask: Tensor | None = None
    ) -> Tensor | dict[str, Tensor]:
        if not self.training:
            return to_deploy_layout(self.predictions(images), self.num_classes)
        self._check_images(images)
        if targets is None:
            raise ValueError("Detector in training mode needs targets (a cspdet.det.Targets); call .eval() for "
                             "predictions")
        targets = as_targets(targets, target_mask, caller="Detector.forward")
        if targets.batch_size != images.shape[0]:
            raise ValueError(f"Detector: {targets.batch_size} images of targets for a batch of {images.shape[0]} images")
        out = self.head(self.neck(self.backbone(images)))
        return self.head.loss(out, targets)

    @torch.no_grad()
    def predict(
        self,
        images: Tensor,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
        classes: Sequence[int] | None = None,
        agnostic: bool = False,
        pre_nms_topk: int | None = None,
        multi_label: bool = False,
    ) -> list[dict[str, Tensor]]:
        """Detections for a batch (runs in eval mode; the previous train/eval mode is restored).

        Args:
            images: (B, 3, H, W) float RGB 0..255.
            conf: minimum score ``obj * cls_prob`` (the class probability for a head without objectness);
                iou: NMS IoU threshold; max_det: detections per image.
            classes: keep only these class indices; agnostic: class-agnostic NMS.
            pre_nms_topk: at most this many top-scoring points per image enter NMS; ``None`` (default) = no
                cap, as YOLOX (see :func:`cspdet.det.postprocess`; a cap only trades accuracy for speed).
            multi_label: every class above ``conf`` of a point is a candidate (COCO evaluation of the task-aligned
                family); default one class per point.

        Post-processing is :func:`cspdet.det.postprocess` in the head's mode: class-aware NMS, or for a head in
        :attr:`nms_free` mode (a one-to-one branch) the top-k with no NMS.

        Returns:
            list of B dicts: ``boxes`` (K, 4) xyxy float32 input px, ``scores`` (K,), ``labels`` (K,) int64.
        """
        was_training = self.training
        self.eval()
        try:
            preds = self.predictions(images)
        finally:
            self.train(was_training)
        return postprocess(preds, conf, iou, max_det, classes, agnostic, pre_nms_topk, multi_label,
                           nms_free=self.nms_free)

    @property
    def nms_free(self) -> bool:
        """True when predictions come from a one-to-one branch as top-k with no NMS (heads that have one)."""
        return bool(self.head.nms_free)

    @nms_free.setter
    def nms_free(self, value: bool) -> None:
        self.head.nms_free = bool(value)
