"""Helpers of the export tests (tests/export): live detectors, letterboxed batches, detection comparison."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

#: Input size of the export tests (H, W): small for speed, non-square to catch H/W swaps.
HW = (96, 128)
#: The second size dynamic exports must accept.
HW2 = (64, 64)
CUSTOM_STAGES = [[1, 32, "darknet", True], [1, 64, "darknet", True], [1, 128, "darknet", True],
                 [1, 256, "darknet", True]]


def live_detector(name: str, seed: int = 0):
    """Preset ``name`` with COCO's 80 classes, random weights with spread class / objectness scores (see
    :func:`spread_scores`) so that it returns plenty of distinct boxes; meta with COCO names and ids, input size
    :data:`HW`."""
    from cspdet.data.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
    from cspdet.models import DetectorMeta, create_detector

    torch.manual_seed(seed)
    extra = {"stage_defs": CUSTOM_STAGES} if name == "custom" else {}
    model = create_detector(name, num_classes=80, prior_prob=0.5, **extra).eval()
    spread_scores(model)
    model.meta = DetectorMeta(list(COCO_CLASSES), list(COCO_CATEGORY_IDS), img_size=HW, strides=model.strides,
                              preset=name, conf=0.2)
    return model


def fused(model: torch.nn.Module) -> torch.nn.Module:
    """A Conv+BN-fused copy: PyTorch's side of the comparisons. Exports are fused (as ``Predictor.from_checkpoint``
    fuses); fusing alone moves decoded boxes by up to ~1e-4 px, so the unfused model is not the reference."""
    import copy

    from cspdet.models import fuse_conv_bn

    return fuse_conv_bn(copy.deepcopy(model)).eval()


def spread_scores(model: torch.nn.Module) -> None:
    """Make a random detector's outputs vary from point to point, as a trained one's do.

    Freshly initialised, BatchNorm's running statistics (mean 0, var 1) do not fit 0..255 inputs, the activations
    saturate and every point gets the same box and about the same score for every class: then float32 rounding
    (1e-6) decides argmax, top-k and NMS order between near-ties, and no two runtimes agree. Here the running
    statistics are set from six real coco128 train photos (cumulative average; noise images would leave channels
    with ~0 variance that blow up on other inputs), and the 1x1 predictions get random weights scaled to their input,
    so scores spread over (0, 1) and boxes span a few strides.
    """
    torch.manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    preds = {m: None for n, m in model.named_modules() if n.endswith(("cls_pred", "obj_pred", "reg_pred", "box_pred"))}
    x = calibration_batch()
    with torch.no_grad():
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        model.head(model.neck(model.backbone(x)))
        model.eval()
        for bn in bns:  # a floor on the variances: near-constant channels would amplify float32 rounding ~30x each
            bn.momentum = 0.03
            bn.running_var.clamp_(min=float(bn.running_var.median()))
        hooks = [m.register_forward_hook(lambda m, i, o: preds.__setitem__(m, float(i[0].std()))) for m in preds]
        model(x)
        for h in hooks:
            h.remove()
        for m, std in preds.items():  # outputs ~ N(bias, 1): scores spread over (0, 1), boxes of a few strides
            m.weight.normal_(0.0, 1.0 / ((std or 1.0) * m.in_channels ** 0.5))  # None: branch not run in eval
            if m.out_channels != 4 and m.weight.shape[0] != 4 * getattr(model.head, "reg_max", 0):
                m.bias.normal_(-1.0, 0.5)  # class / objectness logits


def calibration_batch() -> torch.Tensor:
    """Six coco128 train photos letterboxed to :data:`HW`, (6, 3, 96, 128) float32 (cached)."""
    global _CALIB
    if _CALIB is None:
        from cspdet.data.image_io import read_image

        root = Path(os.environ.get("CSPDET_COCO128", Path(__file__).resolve().parents[1].parent / "shared" / "data"
                                   / "coco128")) / "images" / "train"
        _CALIB = letterboxed([read_image(p) for p in sorted(root.iterdir())[:6]], HW)
    return _CALIB


_CALIB: torch.Tensor | None = None


def letterboxed(images: list[np.ndarray], hw: tuple[int, int]) -> torch.Tensor:
    """(B, 3, H, W) float32 RGB 0..255 batch of ``images`` letterboxed to ``hw``."""
    from cspdet.data.letterbox import Letterbox

    lb = Letterbox(hw)
    return torch.stack([torch.from_numpy(lb.apply(im)[0]) for im in images]).permute(0, 3, 1, 2).float()


def assert_preds_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    """Decoded predictions (B, N, 5 + C) of an export equal PyTorch's: scores (objectness, class probabilities)
    within 1e-4, box coordinates within 1e-4 of the input size (0.013 px at 128: float32 rounding of the runtimes'
    different conv kernels, which these random-weight nets amplify to ~1e-3 px on stride-32 boxes)."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    score_err = (out[..., 4:] - ref[..., 4:]).abs().max().item()
    box_err = (out[..., :4] - ref[..., :4]).abs().max().item()
    assert score_err <= 1e-4, f"scores differ by {score_err}"
    assert box_err <= 1e-4 * max(HW), f"boxes differ by {box_err} px"


def assert_same_detections(a: list[dict], b: list[dict], atol: float = 0.05, score_atol: float = 1e-4) -> None:
    """Two predict() outputs give the same detections: equal counts, and each detection of ``a`` has one of ``b``
    with the same label, box within ``atol`` px and score within ``score_atol`` (order-free: exact score ties may
    come out of two runtimes in either order)."""
    assert len(a) == len(b)
    assert sum(len(d["scores"]) for d in b) > 0, "no detections to compare"
    for da, db in zip(a, b):
        assert da["boxes"].shape == db["boxes"].shape, (da["boxes"].shape, db["boxes"].shape)
        if not len(db["boxes"]):
            continue
        close = ((da["boxes"][:, None] - db["boxes"][None]).abs() <= atol).all(-1)  # (Ka, Kb)
        close &= (da["scores"][:, None] - db["scores"][None]).abs() <= score_atol
        close &= da["labels"][:, None] == db["labels"][None]
        unmatched = (~close.any(1)).sum().item() + (~close.any(0)).sum().item()
        assert unmatched == 0, f"{unmatched} detections without a counterpart (of {len(db['boxes'])})"


def matched_fraction(fp32: list[dict], int8: list[dict], top: int = 30, min_iou: float = 0.5) -> float:
    """Share of fp32's ``top`` best detections per image that int8 also finds (same class, IoU >= min_iou)."""
    hit = total = 0
    for a, b in zip(fp32, int8):
        boxes, labels = a["boxes"][:top], a["labels"][:top]
        total += len(boxes)
        if len(boxes) and len(b["boxes"]):
            iou = box_iou(boxes, b["boxes"]) * (labels[:, None] == b["labels"][None])
            hit += int((iou.max(1).values >= min_iou).sum())
    assert total > 0
    return hit / total
