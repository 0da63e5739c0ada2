"""Every registered preset exports to ONNX and runs on ONNX Runtime with PyTorch's outputs; a representative
subset (one per family and head kind) also through OpenVINO and TorchScript, whose exports cost 2-3x more."""

from __future__ import annotations

import os

import pytest
import torch
from export_helpers import (  # tests/export_helpers.py
    HW,
    assert_preds_close,
    assert_same_detections,
    fused,
    live_detector,
    spread_scores,
)

from cspdet.export import export_detector
from cspdet.runtime import open_model as load_inference_model
from cspdet.models import DETECTORS

#: Presets above this many parameters are exported narrower (width override: same blocks, neck and head kinds,
#: so the same export paths) unless CSPDET_EXPORT_FULL=1: at full size cspdarknet_x alone costs ~40 s.
FULL = os.environ.get("CSPDET_EXPORT_FULL") == "1"
#: One of each family / head kind for the slower formats: YOLOX head (depthwise nano, dense s), the task-aligned head
#: with NMS (yolov8n_layout) and NMS-free (csptal_n), the attention blocks and direct regression (yolo26n_layout),
#: the custom CSPNet.
SUBSET = ["cspdarknet_nano", "yolov8n_layout", "csptal_n", "yolo26n_layout", "custom"]


def _preset(name: str):
    model = live_detector(name)
    if not FULL and sum(p.numel() for p in model.parameters()) > 30e6 and name not in ("cspresnet50", "cspdarknet53"):
        from cspdet.models import create_detector

        torch.manual_seed(0)
        narrow = create_detector(name, num_classes=80, prior_prob=0.5, width=0.25).eval()
        spread_scores(narrow)
        narrow.meta = model.meta
        model = narrow
    return model


def _check_export(model, fmt: str, path, real_batch, real_batch2) -> None:
    result = export_detector(model, fmt, path, dynamic=True)
    deployed = load_inference_model(result.path)
    # metadata round-trips
    assert deployed.meta == model.meta
    assert deployed.num_classes == 80 and deployed.strides == model.strides
    assert deployed.nms_free == model.nms_free
    assert result.info["head"] == model.spec.head.kind and result.info["format"] == fmt
    # decoded predictions equal PyTorch's (the fused model) at two input sizes (dynamic batch and size)
    model = fused(model)
    for batch in (real_batch, real_batch2):
        with torch.no_grad():
            ref = model(batch)
        assert_preds_close(deployed(batch), ref)
    # and the detections of predict()
    assert_same_detections(deployed.predict(real_batch, conf=0.2), model.predict(real_batch, conf=0.2))


@pytest.mark.parametrize("name", DETECTORS.names())
def test_every_preset_exports_to_onnx(name, tmp_path, real_batch, real_batch2):
    _check_export(_preset(name), "onnx", tmp_path / f"{name}.onnx", real_batch, real_batch2)


@pytest.mark.parametrize("fmt", ["openvino", "torchscript"])
@pytest.mark.parametrize("name", SUBSET)
def test_subset_exports_to_openvino_and_torchscript(name, fmt, tmp_path, real_batch, real_batch2):
    suffix = {"openvino": ".xml", "torchscript": ".torchscript"}[fmt]
    _check_export(_preset(name), fmt, tmp_path / f"{name}{suffix}", real_batch, real_batch2)


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "torchscript"])
def test_exported_file_alone_predicts_with_class_names(fmt, tmp_path, real_images):
    """No checkpoint, no config: Predictor.from_checkpoint on the exported file gives PyTorch's Results."""
    from cspdet import Predictor

    model = live_detector("cspdarknet_nano")
    suffix = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".torchscript"}[fmt]
    path = export_detector(model, fmt, tmp_path / f"m{suffix}").path
    deployed = Predictor.from_checkpoint(path)
    assert deployed.img_size == HW and deployed.conf == 0.2 and deployed.class_names[0] == "person"
    reference = Predictor(fused(model), model.meta.class_names, img_size=HW, conf=0.2,
                          category_ids=model.meta.category_ids)
    got, want = deployed(real_images), reference(real_images)
    assert sum(len(r) for r in want) > 0
    for g, w in zip(got, want):
        assert g.class_names == w.class_names and g.category_ids == w.category_ids
        assert sorted(g.names) == sorted(w.names)
    as_dets = [[{k: torch.from_numpy(getattr(r, k)) for k in ("boxes", "scores", "labels")} for r in rs]
               for rs in (got, want)]
    assert_same_detections(*as_dets)


def test_static_export_fixed_batch_and_size(tmp_path, real_batch):
    """A static batch-2 export serves a batch of 3 (split and padded) and names the size it needs."""
    model = live_detector("csptal_n")
    deployed = load_inference_model(export_detector(model, "onnx", tmp_path / "s.onnx", batch=2).path)
    with torch.no_grad():
        ref = fused(model)(real_batch)
    assert_preds_close(deployed(real_batch), ref)
    with pytest.raises(ValueError, match="exported for 96x128 inputs without --dynamic"):
        deployed(torch.zeros(1, 3, 64, 64))
    from cspdet import Predictor

    with pytest.raises(ValueError, match="exported for 96x128 inputs"):  # at construction, before any image
        Predictor.from_checkpoint(deployed.backend.path, img_size=64)
    with pytest.raises(ValueError, match="holds the NMS-free one-to-one branch only"):
        Predictor.from_checkpoint(deployed.backend.path, nms_free=False)


@pytest.mark.parametrize("name", ["cspdarknet_nano", "csptal_n"])
def test_nms_inside_the_graph(name, tmp_path, real_batch):
    """--nms: (B, max_det, 6) detections from the graph equal predict()'s (class-aware NMS for the YOLOX head, the
    one-to-one top-k with no NMS op at all for the NMS-free head)."""
    import onnx

    model = live_detector(name)
    path = export_detector(model, "onnx", tmp_path / "nms.onnx", nms=True, batch=3).path
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ("NonMaxSuppression" in ops) == (not model.nms_free)
    deployed = load_inference_model(path)
    out = deployed(real_batch)
    assert out.shape == (3, model.meta.max_det, 6)
    assert_same_detections(deployed.predict(real_batch, conf=0.2, max_det=300),
                           fused(model).predict(real_batch, conf=0.2, iou=model.meta.iou, max_det=300))


def test_export_chooses_the_branch_of_a_one2one_checkpoint(tmp_path, real_batch):
    """``cspdet export --nms-free / --no-nms-free``: the same checkpoint exports either branch (the file records
    which, and scores like the checkpoint in that mode); default the checkpoint's own mode; a model without a
    one-to-one branch refuses --nms-free in one line."""
    from cspdet.export import export_model
    from cspdet.runtime.checkpoint import new_checkpoint, save_checkpoint
    from cspdet.runtime.errors import ExportError

    model = live_detector("csptal_n")
    weights = save_checkpoint(new_checkpoint("detector", model.spec.to_dict(), model.meta.to_dict(),
                                             model.state_dict()), tmp_path / "o2o.pt")
    for option, expected in ((None, model.nms_free), (True, True), (False, False)):
        path = export_model(weights, "onnx", out=tmp_path / f"m_{option}.onnx", nms_free=option).path
        deployed = load_inference_model(path)
        assert deployed.nms_free is expected
        model.nms_free = expected
        assert_same_detections(deployed.predict(real_batch, conf=0.2), fused(model).predict(real_batch, conf=0.2))
    plain = live_detector("yolov8n_layout")
    weights = save_checkpoint(new_checkpoint("detector", plain.spec.to_dict(), plain.meta.to_dict(),
                                             plain.state_dict()), tmp_path / "plain.pt")
    with pytest.raises(ExportError, match="has no one-to-one branch"):
        export_model(weights, "onnx", out=tmp_path / "x.onnx", nms_free=True)
