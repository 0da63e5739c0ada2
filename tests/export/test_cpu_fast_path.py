"""The CPU fast paths: channels_last gives the same detections; bf16 (PyTorch, OpenVINO) only where the CPU has it
natively; OpenVINO backends leave the process sound (the signal stack its CPU plugin swaps)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from export_helpers import HW, fused, letterboxed, live_detector, matched_fraction  # tests/export_helpers.py

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
    natively, and its detections still overlap fp32's. In the shared test process, like every other test (see
    :func:`test_openvino_bf16_then_the_rest_of_the_process`)."""
    pytest.importorskip("openvino")
    from cspdet import Predictor
    from cspdet.export import export_detector
    from cspdet.runtime import open_model as load_inference_model

    path = export_detector(live_detector("cspdarknet_nano"), "openvino", tmp_path / "m.xml", dynamic=True).path
    exact = load_inference_model(path)
    auto = load_inference_model(path, precision="auto")
    assert exact.backend.precision == "fp32" and auto.backend.precision == ("bf16" if native_bf16() else "fp32")
    assert exact.backend.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    if native_bf16():
        assert auto.backend.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
    dets = [[{k: torch.from_numpy(getattr(r, k)) for k in ("boxes", "scores", "labels")} for r in
             Predictor(m, m.meta.class_names, img_size=m.meta.img_size, conf=0.2)(real_images)] for m in (exact, auto)]
    assert sum(len(d["boxes"]) for d in dets[0]) > 0
    assert matched_fraction(*dets) >= 0.7


def _signal_stack_is_mapped() -> bool:
    """Whether this thread's alternate signal stack, if it has one, lies in mapped memory (Linux)."""
    import ctypes

    class StackT(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    current = StackT()
    assert ctypes.CDLL(None, use_errno=True).sigaltstack(None, ctypes.byref(current)) == 0
    if current.ss_flags & 2 or not current.ss_sp:  # SS_DISABLE: no alternate stack
        return True
    lines = Path("/proc/self/maps").read_text().splitlines()
    maps = [[int(v, 16) for v in line.split()[0].split("-")] for line in lines]
    return all(any(lo <= addr < hi for lo, hi in maps) for addr in (current.ss_sp, current.ss_sp + current.ss_size - 1))


@pytest.fixture
def python_sigchld_handler():
    """A Python-level SIGCHLD handler for the test, as torch's DataLoader installs for the rest of a process once it
    has used worker processes: CPython runs every such handler on the thread's alternate signal stack."""
    import signal

    if not sys.platform.startswith("linux"):
        pytest.skip("alternate signal stacks are checked through Linux's /proc/self/maps")
    previous = signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    yield
    signal.signal(signal.SIGCHLD, previous)


def test_openvino_backends_released_in_creation_order_keep_the_signal_stack(tmp_path, real_batch,
                                                                            python_sigchld_handler):
    """Two OpenVINO backends freed first to last, then a child process: the process survives.

    Each ``openvino.Core`` gives the thread an alternate signal stack of its own and, when destroyed, unmaps it even
    where a later Core saved it to restore; so two Cores freed in creation order left the stack pointing at unmapped
    memory, and the SIGCHLD of the next child process killed the test process with SIGSEGV (the "OpenVINO bf16
    crash", in fact any precision: benchmarks/results/openvino_bf16_crash.md). All backends now share one Core."""
    pytest.importorskip("openvino")
    import gc
    import subprocess

    from cspdet.export import export_detector
    from cspdet.runtime import open_model as load_inference_model

    path = export_detector(live_detector("cspdarknet_nano"), "openvino", tmp_path / "m.xml", dynamic=True).path
    first = load_inference_model(path)
    second = load_inference_model(path, precision="auto")
    assert first.backend._core is second.backend._core
    assert torch.isfinite(first(real_batch)).all() and torch.isfinite(second(real_batch)).all()
    del first
    gc.collect()
    del second
    gc.collect()
    assert _signal_stack_is_mapped()
    child = subprocess.run([sys.executable, "-c", "print('child')"], capture_output=True, text=True, timeout=120)
    assert child.stdout == "child\n"  # the child's exit (SIGCHLD) was handled on that stack


def test_openvino_bf16_then_the_rest_of_the_process(tmp_path, real_images, coco128_val_subset, python_sigchld_handler):
    """OpenVINO bf16 inference, then in the same process everything that ran after it when a test process once
    segfaulted (benchmarks/results/openvino_bf16_crash.md): more OpenVINO compilations (a static specialisation, a
    second model), PyTorch fp32 and bf16 convolutions, a subprocess, pycocotools, the release of every OpenVINO
    object, and ``cspdet benchmark``'s own sequence (a bf16 row, then COCO evaluation and the next format)."""
    pytest.importorskip("openvino")
    if not native_bf16():
        pytest.skip("this CPU has no native bf16 (AMX-BF16 / AVX512-BF16): OpenVINO would not run its bf16 kernels")
    import gc
    import subprocess

    from cspdet import Predictor
    from cspdet.runtime.checkpoint import new_checkpoint, save_checkpoint
    from cspdet.export import export_detector
    from cspdet.runtime import open_model as load_inference_model
    from cspdet.export.benchmark import benchmark

    model = live_detector("cspdarknet_nano")
    path = export_detector(model, "openvino", tmp_path / "m.xml", dynamic=True).path
    ov_bf16 = load_inference_model(path, precision="bf16")
    assert ov_bf16.backend.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
    predictor = Predictor(ov_bf16, ov_bf16.meta.class_names, img_size=ov_bf16.meta.img_size, conf=0.2)
    bf16_dets = [predictor(real_images) for _ in range(ov_bf16.backend.SPECIALISE_AFTER + 1)][-1]
    assert ov_bf16.backend._static  # the recurring shape got its own (bf16) compilation
    second = load_inference_model(path, precision="bf16")  # another compilation while the first one lives
    batch = letterboxed(real_images, HW)
    assert torch.isfinite(second(batch)).all()
    # PyTorch's own oneDNN / AMX kernels after OpenVINO's, fp32 and bf16
    reference = fused(model)
    with torch.no_grad():
        ref = reference(batch)
    assert (FastCPUDetector(reference, "bf16")(batch)[..., 4:] - ref[..., 4:]).abs().max().item() < 0.2
    del predictor, ov_bf16, second  # freed in creation order
    gc.collect()
    assert _signal_stack_is_mapped()
    # a child process (fork + exec: its exit is a SIGCHLD), then pycocotools on the bf16 detections
    assert subprocess.run([sys.executable, "-c", "print('child')"], capture_output=True, text=True,
                          timeout=120).stdout == "child\n"
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = {"images": [{"id": i, "width": int(im.shape[1]), "height": int(im.shape[0])}
                             for i, im in enumerate(real_images)],
                  "categories": [{"id": k} for k in range(80)],
                  "annotations": [{"id": 1 + len(real_images) * j + i, "image_id": i, "category_id": int(label),
                                   "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                                   "area": float((x2 - x1) * (y2 - y1)), "iscrowd": 0}
                                  for i, r in enumerate(bf16_dets)
                                  for j, ((x1, y1, x2, y2), label) in enumerate(zip(r.boxes[:20], r.labels))
                                  if min(x2 - x1, y2 - y1) >= 1]}  # a box clipped to nothing has no IoU with itself
    gt.createIndex()
    assert gt.dataset["annotations"]
    results = gt.loadRes([{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                           "score": 0.9} for a in gt.dataset["annotations"]])
    ev = COCOeval(gt, results, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # detections scored against themselves
    # cspdet benchmark: a bf16 row (export, COCO evaluation, timing), then the next format, in one process
    weights = save_checkpoint(new_checkpoint("detector", model.spec.to_dict(), model.meta.to_dict(),
                                             model.state_dict()), tmp_path / "nano.pt")
    config = tmp_path / "bench.yaml"
    config.write_text(f"model:\n  name: cspdarknet_nano\n  num_classes: 80\ndata:\n  dataset: {coco128_val_subset(3)}\n"
                      f"  workers: 0\neval:\n  img_size: [{HW[0]}, {HW[1]}]\n  batch_size: 3\n")
    rows = benchmark(weights, config, ["openvino_bf16", "pytorch"], out_dir=tmp_path, latency_images=2,
                     throughput_images=8, log=None)
    assert [r.error for r in rows] == ["", ""]
    assert all(r.map50_95 == r.map50_95 and r.latency_ms_median > 0 for r in rows)  # not NaN


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
