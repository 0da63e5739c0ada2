"""int8 post-training quantisation: the export runs with calibration images from a config's dataset, is smaller, and
its detections overlap the fp32 model's (matched boxes of the same class with a high IoU)."""

from __future__ import annotations

import pytest
import torch
from export_helpers import HW, fused, live_detector, matched_fraction  # tests/export_helpers.py

from cspdet.export import export_detector
from cspdet.runtime import open_model as load_inference_model

pytest.importorskip("nncf", reason="the export extra is not installed (pip install 'cspdet[export]')")


@pytest.fixture(scope="module")
def calib_config(coco128_val_subset, tmp_path_factory):
    """A config whose dataset is 8 coco128 val photos (no train split: calibration falls back to val)."""
    desc = coco128_val_subset(8)
    cfg = tmp_path_factory.mktemp("int8") / "calib.yaml"
    cfg.write_text(f"model:\n  name: cspdarknet_nano\n  num_classes: 80\ndata:\n  dataset: {desc}\n  workers: 0\n"
                   f"eval:\n  img_size: [{HW[0]}, {HW[1]}]\n")
    return cfg


@pytest.mark.parametrize("fmt,suffix", [("openvino", ".xml"), ("onnx", ".onnx")])
def test_int8_export_overlaps_fp32(fmt, suffix, calib_config, real_batch, tmp_path):
    model = live_detector("cspdarknet_nano")
    fp32 = export_detector(model, fmt, tmp_path / f"fp32{suffix}")
    int8 = export_detector(model, fmt, tmp_path / f"int8{suffix}", int8=True, data=calib_config, calib=8)
    assert int8.info["precision"] == "int8" and any("8 calibration images" in n for n in int8.notes)
    assert int8.size_bytes < 0.6 * fp32.size_bytes  # int8 weights
    deployed = load_inference_model(int8.path)
    assert deployed.meta == model.meta
    ref = fused(model).predict(real_batch, conf=0.3)
    got = deployed.predict(real_batch, conf=0.3)
    frac = matched_fraction(ref, got)
    assert frac >= 0.7, f"only {frac:.0%} of the fp32 detections survive int8"
    # and it is really quantised: outputs differ from fp32 (by more than float rounding)
    with torch.no_grad():
        assert (deployed(real_batch) - fused(model)(real_batch)).abs().max() > 1e-3
