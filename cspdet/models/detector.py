"""The detector: CSPNet backbone -> CSP-PAN neck -> decoupled anchor-free head, and its factory.

One image's path: (B, 3, H, W) RGB 0..255 float -> backbone feature maps at strides 8/16/32 -> neck maps with
the same strides -> head raw outputs per grid point -> (training) SimOTA + losses, or (eval) decoded boxes
and probabilities -> (``predict``) score filter + class-aware NMS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..det.postprocess import postprocess
from .blocks import DarknetBottleneck, ResNetBottleneck, ResNeXtBottleneck
from .cspnet import CSPDARKNET_SIZES, CSPNet, csp_darknet53, csp_resnet50, cspdarknet
from .head import DecoupledHead
from .layers import YoloxBatchNorm2d
from .neck import CSPPAN

__all__ = ["Detector", "create_detector", "parse_stage_defs", "DETECTOR_NAMES", "BLOCKS", "ACTIVATIONS"]


class Detector(nn.Module):
    """Backbone + neck + head.

    Args:
        backbone: module mapping (B, 3, H, W) to a list of feature maps, finest first, at ``head.strides``
            (a ``features_only`` :class:`~cspdet.models.CSPNet`).
        neck: module mapping that list to a list of the same length (:class:`~cspdet.models.CSPPAN`).
        head: :class:`~cspdet.models.head.DecoupledHead`; owns decoding and the loss.

    Input images are float (B, 3, H, W), RGB, values 0..255 (no mean/std), H and W multiples of the largest
    stride (32).

    * ``train()`` mode: ``detector(images, targets, target_mask)`` -> dict of scalar losses
      ``loss`` (what to backpropagate), ``iou_loss``, ``obj_loss``, ``cls_loss``, ``l1_loss``, ``num_fg``;
      ``targets`` (B, M, 5) [cls, x1, y1, x2, y2] input px, ``target_mask`` (B, M) bool (default: all real).
    * ``eval()`` mode: ``detector(images)`` -> (B, N, 5 + C) ``cx, cy, w, h`` (input px), objectness and
      class probabilities, N = sum over levels of (H / s) * (W / s) -- YOLOX's output layout.
    * :meth:`predict` -> per-image ``{"boxes", "scores", "labels"}`` after NMS.

    For inference, :func:`cspdet.models.fuse_conv_bn` folds every BatchNorm of the whole detector (backbone,
    neck, head) into its conv, in place: eval outputs and :meth:`predict` results stay the same (float32
    rounding), one op fewer per conv unit. Fuse a copy; the fused model can no longer train its BN.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: DecoupledHead) -> None:
        super().__init__()
        if isinstance(backbone, CSPNet) and not backbone.features_only:
            raise ValueError(
                "Detector backbone: this CSPNet is a classifier (features_only=False) and would return logits; "
                "build it with features_only=True (out_indices at strides 8/16/32) to use it as a backbone"
            )
        self.backbone = backbone
        self.neck = neck
        self.head = head

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

    def forward(
        self, images: Tensor, targets: Tensor | None = None, target_mask: Tensor | None = None
    ) -> Tensor | dict[str, Tensor]:
        self._check_images(images)
        out = self.head(self.neck(self.backbone(images)))
        if not self.training:
            return self.head.decode(out)
        if targets is None:
            raise ValueError(
                "Detector in training mode needs targets (B, M, 5) [cls, x1, y1, x2, y2]; call .eval() for predictions"
            )
        if target_mask is None:
            target_mask = torch.ones(targets.shape[:2], dtype=torch.bool, device=targets.device)
        return self.head.loss(out, targets, target_mask)

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
    ) -> list[dict[str, Tensor]]:
        """Detections for a batch (runs in eval mode; the previous train/eval mode is restored).

        Args:
            images: (B, 3, H, W) float RGB 0..255.
            conf: minimum score ``obj * cls_prob``; iou: NMS IoU threshold; max_det: detections per image.
            classes: keep only these class indices; agnostic: class-agnostic NMS.
            pre_nms_topk: at most this many top-scoring points per image enter NMS; ``None`` (default) = no
                cap, as YOLOX (see :func:`cspdet.det.postprocess`; a cap only trades accuracy for speed).

        Returns:
            list of B dicts: ``boxes`` (K, 4) xyxy float32 input px, ``scores`` (K,), ``labels`` (K,) int64.
        """
        was_training = self.training
        self.eval()
        try:
            preds = self(images)
        finally:
            self.train(was_training)
        return postprocess(preds, conf, iou, max_det, classes, agnostic, pre_nms_topk)


#: Activation names accepted by ``create_detector(act=...)`` (and configs).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "lrelu": lambda: nn.LeakyReLU(0.1),
}
#: Block names accepted in ``stage_defs`` given as plain data (configs).
BLOCKS: dict[str, Callable[..., nn.Module]] = {
    "resnet": ResNetBottleneck,
    "resnext": ResNeXtBottleneck,
    "darknet": DarknetBottleneck,
}
_TIMM_BACKBONES: dict[str, Callable[..., CSPNet]] = {"cspresnet50": csp_resnet50, "cspdarknet53": csp_darknet53}
#: Every preset name of :func:`create_detector`.
DETECTOR_NAMES: tuple[str, ...] = tuple(f"cspdarknet_{s}" for s in CSPDARKNET_SIZES) + (*_TIMM_BACKBONES, "custom")


def _act(act: str | Callable[[], nn.Module] | None) -> Callable[[], nn.Module] | None:
    if act is None or callable(act):
        return act
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[act]


def parse_stage_defs(stage_defs: Sequence[Sequence[Any]]) -> list[tuple[int, int, Callable[..., nn.Module], bool]]:
    """``[num_blocks, out_channels, block, downsample]`` rows (block a class or a :data:`BLOCKS` name, as in
    configs) -> :class:`~cspdet.models.CSPNet` ``stage_defs`` tuples. Raises ValueError naming the bad row."""
    out = []
    for i, sd in enumerate(stage_defs):
        if not isinstance(sd, (list, tuple)) or len(sd) != 4:
            raise ValueError(f"stage_defs[{i}] must be [num_blocks, out_channels, block, downsample], got {sd!r}")
        n, c, block, down = sd
        if isinstance(block, str):
            if block not in BLOCKS:
                raise ValueError(f"stage_defs[{i}]: unknown block {block!r}; choose one of {sorted(BLOCKS)}")
            block = BLOCKS[block]
        out.append((n, c, block, bool(down)))
    return out


_stage_defs = parse_stage_defs  # engine/classify.py imports this name


def create_detector(
    name: str,
    num_classes: int = 80,
    *,
    depth: float | None = None,
    width: float | None = None,
    depthwise: bool | None = None,
    act: str | Callable[[], nn.Module] | None = None,
    stem_channels: int | None = None,
    stage_defs: Sequence[Sequence[Any]] | None = None,
    prior_prob: float = 0.01,
) -> Detector:
    """Build a detector by preset name.

    Presets (YOLOX depth / width multipliers; the neck uses ``max(round(3 * depth), 1)`` blocks per CSP stage,
    neck channels ``int(256/512/1024 * width)``, head width ``int(256 * width)``):

    * ``cspdarknet_{nano,tiny,s,m,l,x}``: YOLOX-{Nano,Tiny,S,M,L,X} exactly (same layers and parameter
      counts, loadable with :func:`cspdet.models.load_yolox_weights`); nano is depthwise. Initialised as
      YOLOX's ``get_model`` does, so training from scratch matches YOLOX: PyTorch's default conv init
      everywhere, BN eps 1e-3 / momentum 0.03, cls/obj biases from ``prior_prob``.
    * ``cspresnet50`` / ``cspdarknet53``: the timm-exact CSPResNet-50 / CSPDarknet-53 (loadable with
      :func:`cspdet.models.load_timm_weights` on ``detector.backbone``) as backbone, features at strides
      8/16/32 (256/512/1024 channels), with a YOLOX-L sized neck and head by default (depth = width = 1).
      ``act`` / ``depth`` / ``width`` change only the neck and head: the backbone keeps timm's layout and
      timm's initialisation (kaiming fan-out, zero-init last BN of residual blocks); neck and head are
      initialised as YOLOX's.
    * ``custom``: a :class:`~cspdet.models.CSPNet` backbone from ``stem_channels`` (default 32) and
      ``stage_defs`` (``[num_blocks, out_channels, block, downsample]`` with ``block`` a block class or one of
      ``resnet`` / ``resnext`` / ``darknet``), whose last three stages must have strides 8, 16, 32; neck
      channels ``int(c * width)`` of the backbone's, depth/width default 0.33 / 1.0, SiLU, YOLOX BN settings;
      the backbone gets :class:`~cspdet.models.CSPNet`'s default (timm-style) initialisation.

    Args:
        name: preset name (see :data:`DETECTOR_NAMES`).
        num_classes: number of classes C.
        depth, width, depthwise, act: override the preset's multipliers / depthwise / activation
            (``act``: ``silu``, ``relu``, ``leaky_relu`` or a module class).
        stem_channels, stage_defs: the backbone of ``custom`` (an error with any other name).
        prior_prob: initial foreground probability of the head's outputs.

    Raises:
        ValueError: unknown name, bad override, or a backbone that does not give strides 8/16/32.
    """
    if name != "custom" and (stage_defs is not None or stem_channels is not None):
        raise ValueError(f"stage_defs / stem_channels define a custom backbone: use name 'custom', not {name!r}")
    if name.startswith("cspdarknet_") and name[len("cspdarknet_") :] in CSPDARKNET_SIZES:
        d0, w0, dw0 = CSPDARKNET_SIZES[name[len("cspdarknet_") :]]
        depth, width = d0 if depth is None else depth, w0 if width is None else width
        depthwise = dw0 if depthwise is None else depthwise
        act_fn = _act(act) or nn.SiLU
        backbone: nn.Module = cspdarknet(depth, width, depthwise=depthwise, act=act_fn)
        neck_channels = [int(c * width) for c in (256, 512, 1024)]
    elif name in _TIMM_BACKBONES:
        depth, width = 1.0 if depth is None else depth, 1.0 if width is None else width
        depthwise = bool(depthwise)
        act_fn = _act(act) or nn.SiLU
        backbone = _TIMM_BACKBONES[name](features_only=True, num_classes=0)
        neck_channels = [int(c * width) for c in backbone.out_channels]
    elif name == "custom":
        if stage_defs is None:
            raise ValueError("create_detector('custom') needs stage_defs")
        depth, width = 0.33 if depth is None else depth, 1.0 if width is None else width
        depthwise = bool(depthwise)
        act_fn = _act(act) or nn.SiLU
        backbone = CSPNet(
            stem_channels=32 if stem_channels is None else stem_channels,
            stage_defs=parse_stage_defs(stage_defs),
            num_classes=0,
            norm=YoloxBatchNorm2d,
            act=act_fn,
            pre_kernel_size=3,
            features_only=True,
        )
        neck_channels = [int(c * width) for c in backbone.out_channels]
    else:
        raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")

    strides = list(backbone.out_strides)
    if strides != [8, 16, 32]:
        raise ValueError(f"detector {name!r}: backbone feature strides are {strides}, need [8, 16, 32]")
    if width <= 0 or depth <= 0:
        raise ValueError(f"depth and width must be > 0, got depth={depth}, width={width}")
    neck = CSPPAN(
        backbone.out_channels, neck_channels, num_blocks=max(round(3 * depth), 1), depthwise=depthwise, act=act_fn
    )
    head = DecoupledHead(
        num_classes,
        neck_channels,
        hidden_channels=int(256 * width) if name.startswith("cspdarknet_") else neck_channels[0],
        strides=strides,
        depthwise=depthwise,
        act=act_fn,
        prior_prob=prior_prob,
    )
    return Detector(backbone, neck, head)
