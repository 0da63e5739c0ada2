"""tools/benchmark.py: per format a row with size, mAP, latency and throughput; equal mAP for equal graphs; CSV."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from export_helpers import HW, live_detector  # tests/export_helpers.py

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_tool(coco128_val_subset, tmp_path):
    from cspdet.runtime.checkpoint import new_checkpoint, save_checkpoint

    model = live_detector("cspdarknet_nano")
    weights = save_checkpoint(new_checkpoint("detector", model.spec.to_dict(), model.meta.to_dict(),
                                             model.state_dict()), tmp_path / "nano.pt")
    config = tmp_path / "bench.yaml"
    config.write_text(f"model:\n  name: cspdarknet_nano\n  num_classes: 80\ndata:\n  dataset: {coco128_val_subset(4)}\n"
                      f"  workers: 0\neval:\n  img_size: [{HW[0]}, {HW[1]}]\n  batch_size: 4\n")
    out_csv = tmp_path / "bench.csv"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), str(weights), "--data", str(config),
                           "--formats", "pytorch", "onnx", "openvino", "--images", "3", "--threads", "1", "--csv", str(out_csv),
                           "--out", str(tmp_path / "exports")], check=False, capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["format", "size", "MB", "mAP50-95"]
    assert lines[1].startswith("pytorch") and lines[2].startswith("onnx") and lines[-1] == f"wrote {out_csv}"
    rows = {r["format"]: r for r in csv.DictReader(out_csv.open())}
    assert set(rows) == {"pytorch", "onnx", "openvino"}
    for r in rows.values():
        assert not r["error"], r["error"]
        assert float(r["size_mb"]) > 1 and float(r["latency_ms_median"]) > 0
        assert float(r["latency_ms_p90"]) >= float(r["latency_ms_median"]) and float(r["throughput_b8_ips"]) > 0
    assert rows["onnx"]["file"].endswith("nano.onnx") and (tmp_path / "exports" / "nano.onnx").is_file()
    for key in ("map50_95", "map50"):  # the same graph (dynamic ONNX, static OpenVINO at the eval size): the same mAP
        assert round(float(rows["pytorch"][key]), 4) == round(float(rows["onnx"][key]), 4)
        assert round(float(rows["pytorch"][key]), 4) == round(float(rows["openvino"][key]), 4)


def test_a_dataset_yaml_is_scored_at_the_size_the_model_records(coco128_val_subset, tmp_path):
    """``--data DATASET.yaml`` has no eval settings of its own: the benchmark scores at the checkpoint's input size
    (a model trained at 416 scored at the config default 640 lost nearly all its AP), a config keeps its own."""
    from cspdet.export.benchmark import bench_config
    from cspdet.runtime.checkpoint import new_checkpoint, save_checkpoint

    model = live_detector("cspdarknet_nano")
    weights = save_checkpoint(new_checkpoint("detector", model.spec.to_dict(), model.meta.to_dict(),
                                             model.state_dict()), tmp_path / "nano.pt")
    desc = coco128_val_subset(2)
    cfg = bench_config(weights, desc)
    assert cfg.eval.img_size == list(HW) and cfg.data.dataset == str(desc)
    config = tmp_path / "bench.yaml"
    config.write_text(f"data:\n  dataset: {desc}\neval:\n  img_size: [96, 128]\n")
    assert bench_config(weights, config).eval.img_size == [96, 128]
