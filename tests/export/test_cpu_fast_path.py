"""The PyTorch CPU fast path: channels_last gives the same detections; bf16 only where the CPU has it natively."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from export_helpers import fused, live_detector, matched_fraction  # tests/export_helpers.py

from cspdet.runtime.cpu import FastCPUDetector, native_bf16, resolve_precision


def test_native_bf16_follows_cpu_flags():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    expected = ("amx_bf16" in flags or "avx512_bf16" in flags) and torch.backends.mkldnn.is_available()
    assert native_bf16() == expected
    assert resolve_precision("auto") == ("bf16" if expected else "fp32")
    assert resolve_precision("fp32") == "fp32"
    with pytest.raises(ValueError, match="fp32, bf16 or auto"):
        resolve_precision("fp16")


@pytest.mark.parametrize("name", ["cspdarknet_nano", "csptal_n"])
def test_channels_last_and_bf16(name, real_batch):
    model = fused(live_detector(name))
    with torch.no_grad():
        ref = model(real_batch)
    fast = FastCPUDetector(fused(live_detector(name)), "fp32", channels_last=True)
    assert fast.num_classes == 80 and fast.nms_free == model.nms_free and fast.meta == model.meta
    assert (fast(real_batch) - ref).abs().max().item() <= 1e-3  # float32 rounding of other conv kernels
    bf16 = FastCPUDetector(fused(live_detector(name)), "bf16", channels_last=True)
    out = bf16(real_batch)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out[..., 4:] - ref[..., 4:]).abs().max().item() < 0.2  # bf16 keeps ~3 significant digits
    frac = matched_fraction(model.predict(real_batch, conf=0.3), bf16.predict(real_batch, conf=0.3))
    assert frac >= 0.7


def test_predictor_fast_path_from_checkpoint(tmp_path, real_images):
    from cspdet import Predictor
    from cspdet.runtime.checkpoint import new_checkpoint, save_checkpoint

    model = live_detector("cspdarknet_nano")
    path = save_checkpoint(new_checkpoint("detector", model.spec.to_dict(), model.meta.to_dict(), model.state_dict()),
                           tmp_path / "m.pt")
    plain = Predictor.from_checkpoint(path)
    fast = Predictor.from_checkpoint(path, precision="auto", channels_last=True)
    assert isinstance(fast.model, FastCPUDetector) and not isinstance(plain.model, FastCPUDetector)
    assert fast.model.precision == ("bf16" if native_bf16() else "fp32")
    as_dets = [[{k: torch.from_numpy(getattr(r, k)) for k in ("boxes", "scores", "labels")} for r in p(real_images)]
               for p in (plain, fast)]
    assert matched_fraction(*as_dets) >= 0.7


def test_openvino_precision_follows_the_cpu(tmp_path, real_images):
    """``precision`` reaches OpenVINO: fp32 (the default) is exact, ``auto`` runs bf16 only where the CPU has it
    natively, and its detections still overlap fp32's.

    Runs in a child process: on the AMX Xeon of session 6, a pytest process that had run an OpenVINO bf16 model
    segfaulted in a later, unrelated test (pycocotools after a subprocess call), only in one fixed test order and
    without a Python traceback; the benchmarks, which run bf16 then other formats, evaluation and file writes in one
    process, never did. Kept out of the shared test process until the cause is known."""
    pytest.importorskip("openvino")
    import subprocess
    import sys

    import numpy as np

    from cspdet.export import export_detector

    path = export_detector(live_detector("cspdarknet_nano"), "openvino", tmp_path / "m.xml", dynamic=True).path
    np.savez(tmp_path / "images.npz", *real_images)
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
import numpy as np, torch
from export_helpers import matched_fraction
from cspdet import Predictor
from cspdet.runtime import open_model as load_inference_model
from cspdet.runtime.cpu import native_bf16
with np.load({str(tmp_path / "images.npz")!r}) as z:
    images = [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]
exact = load_inference_model({str(path)!r})
auto = load_inference_model({str(path)!r}, precision="auto")
assert exact.backend.precision == "fp32" and auto.backend.precision == ("bf16" if native_bf16() else "fp32")
assert exact.backend.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
if native_bf16():
    assert auto.backend.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
dets = [[{{k: torch.from_numpy(getattr(r, k)) for k in ("boxes", "scores", "labels")}} for r in
         Predictor(m, m.meta.class_names, img_size=m.meta.img_size, conf=0.2)(images)] for m in (exact, auto)]
assert sum(len(d["boxes"]) for d in dets[0]) > 0
print("matched", matched_fraction(*dets))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split("matched")[-1]) >= 0.7


def test_bf16_benchmark_rows_only_where_the_cpu_has_bf16():
    from cspdet.export.benchmark import BENCH_FORMATS, default_formats

    formats = default_formats()
    assert "onnx_int8" not in formats and {"pytorch", "onnx", "openvino", "openvino_int8"} <= set(formats)
    bf16 = {n for n, f in BENCH_FORMATS.items() if f.precision == "bf16"}
    assert bf16 == {"pytorch_bf16", "openvino_bf16"}
    assert (bf16 <= set(formats)) if native_bf16() else not (bf16 & set(formats))


def test_openvino_specialises_a_recurring_shape(tmp_path, real_batch):
    """A dynamic OpenVINO model compiles a static copy for a shape once it recurs; the outputs stay PyTorch's, other
    shapes still run, and only the most recent shapes keep a compilation."""
    pytest.importorskip("openvino")
    from export_helpers import assert_preds_close

    from cspdet.export import export_detector
    from cspdet.runtime import open_model as load_inference_model

    model = live_detector("cspdarknet_nano")
    deployed = load_inference_model(export_detector(model, "openvino", tmp_path / "m.xml", dynamic=True).path)
    backend = deployed.backend
    backend.MAX_SPECIALISED = 1
    with torch.no_grad():
        ref = fused(model)(real_batch)
    for _ in range(backend.SPECIALISE_AFTER + 1):
        assert_preds_close(deployed(real_batch), ref)
    assert list(backend._static) == [tuple(real_batch.shape)]
    small = real_batch[:1, :, :64, :64].contiguous()
    with torch.no_grad():
        ref_small = fused(model)(small)
    for _ in range(backend.SPECIALISE_AFTER):
        assert_preds_close(deployed(small), ref_small)
    assert list(backend._static) == [tuple(small.shape)]  # the older shape was evicted
