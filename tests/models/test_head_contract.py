"""The detection head contract (cspdet.models.contracts): every registered head kind satisfies it, and a new head
family defined in this file alone -- a one-level centre-point head (one box per cell of the finest map, each object
owned by the cell of its centre, so one-to-one and read without NMS) -- trains through the real trainer, is scored with COCO mAP by the evaluator, exports to ONNX and predicts from the
exported file through ``Predictor``, with no package file knowing about it."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from cspdet import Predictor
from cspdet.config import config_from_dict
from cspdet.data.image_io import read_image
from cspdet.det import Predictions, Targets, from_deploy_layout, postprocess, to_deploy_layout
from cspdet.runtime.checkpoint import load_checkpoint
from cspdet.engine.evaluator import COCOEvaluator
from cspdet.engine.trainer import Trainer
from cspdet.models import (
    ACTIVATIONS,
    DETECTORS,
    FAMILIES,
    HEADS,
    NORMS,
    DetectionHead,
    DetectorSpec,
    Detector,
    HeadEvalDefaults,
    HeadSpec,
    Preset,
    detector_spec,
    register_detector,
    register_family,
)
from cspdet.models.layers import ConvBNAct

# --------------------------------------------------------------------------------------------- the new family


class CentreOutputs(NamedTuple):
    heat: Tensor
    """(B, C, H, W) class logits of each cell of the finest map."""
    box: Tensor
    """(B, 4, H, W) per cell: centre offset logits (x, y) in the cell, log width / height in strides."""


class CentrePointHead(nn.Module):
    """One level (the finest map only): a box and class scores per cell. Training makes only the cell holding an
    object's centre positive (one-to-one, as CenterNet / YOLOv10's one-to-one branch), so inference takes the top-k
    (cell, class) scores with no NMS. Deliberately not derived from any cspdet head class."""

    loss_keys = ("loss", "heat_loss", "box_loss")

    def __init__(self, num_classes: int, in_channels: Sequence[int], strides: Sequence[int] = (8, 16, 32),
                 channels: int = 16, prior_prob: float = 0.1, norm: type[nn.Module] = nn.BatchNorm2d,
                 act: type[nn.Module] | None = nn.SiLU) -> None:
        super().__init__()
        self.num_classes, self.strides = num_classes, tuple(strides)
        self._args = dict(channels=channels, prior_prob=prior_prob, norm=norm, act=act)
        self.stem = ConvBNAct(in_channels[0], channels, 3, norm=norm, act=act)
        self.heat = nn.Conv2d(channels, num_classes, 1)
        self.box = nn.Conv2d(channels, 4, 1)
        nn.init.constant_(self.heat.bias, math.log(prior_prob / (1 - prior_prob)))
        nn.init.zeros_(self.box.bias)
        self.nms_free = True
        self.schedule: list[tuple[int, int, str]] = []  # every set_epoch call, for the test

    @classmethod
    def from_spec(cls, spec: HeadSpec, in_channels: Sequence[int]) -> CentrePointHead:
        return cls(spec.num_classes, in_channels, spec.strides, norm=NORMS.get(spec.norm),
                   act=None if spec.act is None else ACTIVATIONS.get(spec.act), **spec.options)

    @property
    def spec(self) -> HeadSpec:
        a = self._args
        return HeadSpec("test_centrepoint", self.num_classes, None, self.strides, False, NORMS.name_of(a["norm"]),
                        None if a["act"] is None else ACTIVATIONS.name_of(a["act"]), None,
                        {"channels": a["channels"], "prior_prob": a["prior_prob"]})

    @property
    def eval_defaults(self) -> HeadEvalDefaults:
        return HeadEvalDefaults(multi_label=False, nms_free=self.nms_free)

    def set_epoch(self, epoch: int, epochs: int, phase: str = "train") -> None:
        self.schedule.append((epoch, epochs, phase))

    def forward(self, features: Sequence[Tensor]) -> CentreOutputs:
        x = self.stem(features[0])
        return CentreOutputs(self.heat(x), self.box(x))

    def _boxes(self, box: Tensor) -> Tensor:
        """(B, 4, H, W) raw -> (B, H*W, 4) xyxy input px (row-major cells)."""
        s = self.strides[0]
        h, w = box.shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(h, device=box.device), torch.arange(w, device=box.device), indexing="ij")
        cx = (xs + box[:, 0].float().sigmoid()) * s
        cy = (ys + box[:, 1].float().sigmoid()) * s
        half_w = box[:, 2].float().clamp(max=8).exp() * s / 2
        half_h = box[:, 3].float().clamp(max=8).exp() * s / 2
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), -1).flatten(1, 2)

    def decode(self, raw: CentreOutputs) -> Predictions:
        heat = raw.heat.float().sigmoid()
        return Predictions(boxes=self._boxes(raw.box), class_scores=heat.flatten(2).transpose(1, 2))

    def loss(self, raw: CentreOutputs, targets: Targets) -> dict[str, Tensor]:
        """Each object is owned by the cell holding its centre: focal loss on the class map, L1 on the box at that
        cell (offset in the cell, log size in strides)."""
        s = self.strides[0]
        b, _, h, w = raw.heat.shape
        img, obj = targets.mask.nonzero(as_tuple=True)
        t, labels = targets.boxes[img, obj].float(), targets.labels[img, obj]
        cx, cy = (t[:, 0] + t[:, 2]) / 2 / s, (t[:, 1] + t[:, 3]) / 2 / s
        col, row = cx.long().clamp(0, w - 1), cy.long().clamp(0, h - 1)
        heat_target = torch.zeros_like(raw.heat, dtype=torch.float32)
        heat_target[img, labels, row, col] = 1.0
        num_pos = max(len(img), 1)
        heat_loss = sigmoid_focal_loss(raw.heat.float(), heat_target, reduction="sum") / num_pos
        pred = raw.box.float()[img, :, row, col]  # (P, 4)
        wh = (t[:, 2:4] - t[:, 0:2]).clamp(min=1) / s
        box_target = torch.stack(((cx - col).clamp(1e-3, 1 - 1e-3), (cy - row).clamp(1e-3, 1 - 1e-3)), -1)
        box_loss = (F.l1_loss(pred[:, :2].sigmoid(), box_target, reduction="sum")
                    + F.l1_loss(pred[:, 2:], wh.log(), reduction="sum")) / num_pos
        return {"loss": heat_loss + box_loss, "heat_loss": heat_loss.detach(), "box_loss": box_loss.detach(),
                "num_fg": torch.tensor(float(len(img)))}


def centrepoint_family(num_classes: int, width: float = 0.125, channels: int = 16) -> DetectorSpec:
    """A CSPDarknet-nano backbone and neck (as data) with the centre-point head."""
    base = detector_spec("cspdarknet_nano", num_classes, width=width)
    return base.replace(head=HeadSpec("test_centrepoint", num_classes, None, base.head.strides, False, "bn", "silu",
                                      None, {"channels": channels, "prior_prob": 0.1}))


# The head kind is registered for the whole session (checkpoints of it must load again); the preset that the
# trainer builds by name only while this module's training runs, so other tests that go over every preset do not
# meet a detector that is not one of the package's.
HEADS.register("test_centrepoint", CentrePointHead, overwrite=True)


@pytest.fixture(scope="module")
def centrepoint_preset():
    register_family("test_centrepoint", centrepoint_family)
    register_detector("test_centrepoint_tiny", Preset("test_centrepoint"))
    yield "test_centrepoint_tiny"
    DETECTORS.unregister("test_centrepoint_tiny")
    FAMILIES.unregister("test_centrepoint")

# --------------------------------------------------------------------------------------------- the contract


def _head_of_kind(kind: str) -> nn.Module:
    """A head of ``kind`` built from the spec of a preset that uses it, on neck maps of 16 / 32 / 64 channels."""
    if kind == "test_centrepoint":
        return CentrePointHead.from_spec(centrepoint_family(3).head, [16, 32, 64])
    known = {"yolox": "cspdarknet_nano", "tal": "csptal_n"}
    names = [known[kind]] if kind in known else DETECTORS.names()
    for name in names:
        try:
            spec = detector_spec(name, 3)
        except ValueError:  # a preset that needs parameters (e.g. custom)
            continue
        if spec.head.kind == kind:
            return HEADS.get(kind).from_spec(spec.head, [16, 32, 64])
    pytest.fail(f"head kind {kind!r} is registered but no detector preset uses it; give it one to test it here")


@pytest.mark.parametrize("kind", HEADS.names())
def test_every_registered_head_kind_satisfies_the_contract(kind):
    head = _head_of_kind(kind)
    assert isinstance(head, DetectionHead)
    assert type(head).from_spec(head.spec, [16, 32, 64]).spec == head.spec  # built from its own spec, round trip
    feats = [torch.randn(2, c, 64 // s, 64 // s) for c, s in zip((16, 32, 64), (8, 16, 32))]
    head.set_epoch(0, 3, "train")
    head.set_epoch(2, 3, "no_aug")
    head.eval()
    with torch.no_grad():
        preds = head.decode(head(feats))
    assert isinstance(preds, Predictions) and preds.boxes.shape[0] == 2 and preds.boxes.shape[-1] == 4
    assert preds.class_scores.shape[-1] == head.num_classes
    assert isinstance(head.eval_defaults, HeadEvalDefaults) and head.eval_defaults.nms_free == head.nms_free
    # the deploy layout (exported files) reads back to the same detections
    again = from_deploy_layout(to_deploy_layout(preds))
    a = postprocess(preds, conf=1e-6, nms_free=head.nms_free)
    b = postprocess(again, conf=1e-6, nms_free=head.nms_free)
    assert sum(len(x["scores"]) for x in a) > 0
    for x, y in zip(a, b):
        torch.testing.assert_close(x["scores"], y["scores"])
        torch.testing.assert_close(x["boxes"], y["boxes"], atol=1e-3, rtol=0)
    head.train()
    targets = Targets(torch.tensor([[[4.0, 8, 40, 50]], [[20, 20, 60, 60]]]), torch.tensor([[1], [2]]),
                      torch.ones(2, 1, dtype=torch.bool))
    losses = head.loss(head(feats), targets)
    assert set(head.loss_keys) <= set(losses) and head.loss_keys[0] == "loss"
    assert all(torch.isfinite(losses[k]) and losses[k].dim() == 0 for k in head.loss_keys)
    losses["loss"].backward()


def test_heads_are_built_from_their_own_spec_options():
    # the task-aligned head takes its own options (no YOLOX hidden_channels); the YOLOX head its own
    tal = Detector.from_spec(detector_spec("csptal_n", 3, width=0.125)).head
    assert tal.spec.hidden_channels is None and "box_channels" not in tal.spec.options
    wide = tal.spec.replace(options={**tal.spec.options, "box_channels": 24})
    assert type(tal).from_spec(wide, [32, 64, 128]).levels[0].box_pred.in_channels == 24
    with pytest.raises(ValueError, match="box_channels"):
        type(tal).from_spec(tal.spec.replace(hidden_channels=64), [32, 64, 128])
    cp = Detector.from_spec(centrepoint_family(2)).head
    assert isinstance(cp, CentrePointHead) and cp.stem.conv.out_channels == 16


# --------------------------------------------------------------------------------------------- the whole route


@pytest.fixture(scope="module")
def centre_run(shapes_descriptor, tmp_path_factory, centrepoint_preset):
    raw = {
        "model": {"name": centrepoint_preset, "num_classes": 3},
        "data": {"dataset": str(shapes_descriptor), "img_size": [64, 64], "workers": 0},
        "train": {"epochs": 3, "batch_size": 4, "warmup_epochs": 1, "no_aug_epochs": 1, "eval_interval": 3,
                  "optimizer": "auto", "output_dir": str(tmp_path_factory.mktemp("runs")),
                  "name": "centre", "log_images": 0, "device": "cpu"},
        "eval": {"img_size": [64, 64], "batch_size": 4},
    }
    trainer = Trainer(config_from_dict(raw), progress=False)
    summary = trainer.fit()
    return trainer, Path(summary["run_dir"]), Path(str(shapes_descriptor)).parent / "shapes"


def test_new_head_family_trains_through_the_real_trainer(centre_run):
    trainer, run_dir, _ = centre_run
    with (run_dir / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and {"train/loss", "train/heat_loss", "train/box_loss"} <= rows[0].keys()
    assert all(math.isfinite(float(r["train/loss"])) and float(r["train/loss"]) > 0 for r in rows)
    assert rows[-1]["AP"] != ""  # the trainer's own evaluation ran on the new head
    # the trainer followed the contract: set_epoch with the phase (the last epoch is the no-aug tail)
    assert trainer.model.head.schedule == [(0, 3, "train"), (1, 3, "train"), (2, 3, "no_aug")]
    ckpt = load_checkpoint(run_dir / "best.pt", kind="detector")
    assert ckpt["spec"]["head"]["kind"] == "test_centrepoint" and ckpt["spec"]["head"]["options"]["channels"] == 16


def test_new_head_family_is_scored_with_coco_map(centre_run, tmp_path):
    trainer, _, _ = centre_run
    metrics = COCOEvaluator(trainer.val_loader).evaluate(trainer.eval_model(), output_dir=tmp_path, plots=False)
    assert 0.0 <= metrics.stats["AP"] <= 1.0 and 0.0 <= metrics.stats["AP50"] <= 1.0
    detections = json.loads((tmp_path / "detections.json").read_text())
    assert detections and {d["category_id"] for d in detections} <= {1, 2, 3}
    # NMS-free top-k: at most max_det (cell, class) pairs per image
    per_image: dict[int, int] = {}
    for d in detections:
        per_image[d["image_id"]] = per_image.get(d["image_id"], 0) + 1
    assert max(per_image.values()) <= 300


def test_new_head_family_exports_to_onnx_and_predicts_through_predictor(centre_run, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install 'cspdet[export]')")
    from export_helpers import assert_same_detections

    from cspdet.export import export_model

    _, run_dir, shapes_root = centre_run
    onnx_path = export_model(run_dir / "best.pt", "onnx", dynamic=True, out=tmp_path / "centre.onnx").path
    images = [read_image(p) for p in sorted((shapes_root / "images" / "val").glob("*.jpg"))[:3]]
    # max_det above the 8 x 8 cells x 3 classes of a 64 px image: every pair above conf is kept by both runtimes,
    # so near-equal scores of an untrained net cannot swap places at a cut-off
    kw = dict(conf=0.01, max_det=300, device="cpu")
    torch_results = Predictor.from_checkpoint(run_dir / "best.pt", **kw)(images)
    onnx_predictor = Predictor.from_checkpoint(onnx_path, **kw)
    assert onnx_predictor.model.nms_free  # the exported file knows it holds NMS-free predictions
    onnx_results = onnx_predictor(images)
    assert sum(len(r) for r in onnx_results) > 0
    as_dicts = [[{"boxes": torch.from_numpy(r.boxes), "scores": torch.from_numpy(r.scores),
                  "labels": torch.from_numpy(r.labels)} for r in rs] for rs in (onnx_results, torch_results)]
    assert_same_detections(*as_dicts, atol=0.05, score_atol=1e-4)
    assert all(np.all(r.labels < 3) for r in onnx_results)
