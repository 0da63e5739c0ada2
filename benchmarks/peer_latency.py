"""Peer rows of ``bench_deploy.py``: the end-to-end latency of Ultralytics' ``predict`` (PyTorch, and its own ONNX
and OpenVINO exports) and of YOLOX's demo predictor, timed exactly as cspdet's ``Predictor`` is timed there.

This script runs in the separate benchmark venv that has ``ultralytics`` / ``yolox`` installed (``bench_deploy.py
--peer-python``); cspdet never imports either. One JSON line per row on stdout:

    python benchmarks/peer_latency.py '{"peer": "ultralytics", "model": "yolo26n", "size": 640, "threads": 2,
        "images": [...], "n": 20, "formats": ["pytorch", "onnx", "openvino"], "workdir": "/tmp/x"}'

Timing (same as ``cspdet.export.benchmark._latency``): 3 warm-up images, then ``n`` images one by one, each
call from the file path to boxes in original-image pixels (read + decode + letterbox + forward + post-process);
median and p90 in ms. Models are built from their YAML / exp with random weights (nothing is downloaded; latency
does not depend on the weights), 80 classes.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def timed(fn, paths: list[str], n: int) -> tuple[float, float]:
    for p in paths[:3]:
        fn(p)
    times = []
    for i in range(n):
        tic = time.perf_counter()
        fn(paths[i % len(paths)])
        times.append(1000 * (time.perf_counter() - tic))
    return float(np.median(times)), float(np.percentile(times, 90))


def ultralytics_rows(job: dict):
    import torch
    from ultralytics import YOLO

    size, paths = job["size"], job["images"]
    model = YOLO(f"{job['model']}.yaml")  # random weights from the architecture YAML (no download)
    for fmt in job["formats"]:
        if fmt == "pytorch":
            runner = model
        else:  # Ultralytics' own exporter with its defaults (static batch 1 at imgsz, simplified ONNX)
            tic = time.perf_counter()
            path = model.export(format=fmt, imgsz=size, device="cpu", verbose=False)
            export_s = time.perf_counter() - tic
            runner = YOLO(path, task="detect")
        torch.set_num_threads(job["threads"])

        def fn(p, runner=runner):
            return runner.predict(p, imgsz=size, device="cpu", verbose=False)

        p50, p90 = timed(fn, paths, job["n"])
        yield dict(framework="ultralytics", model=job["model"], format=fmt, ms_p50=p50, ms_p90=p90,
                   torch_threads=torch.get_num_threads(), export_s=0.0 if fmt == "pytorch" else export_s)


def yolox_rows(job: dict):
    """YOLOX's ``tools/demo.py`` Predictor.inference path with its defaults (conf 0.3, nms 0.3, no --fuse), using the
    yolox package's own exp, ValTransform and postprocess."""
    import cv2
    import torch
    from yolox.data.data_augment import ValTransform
    from yolox.exp import get_exp
    from yolox.utils import postprocess

    torch.set_num_threads(job["threads"])
    size, paths = job["size"], job["images"]
    exp = get_exp(None, job["model"])
    exp.test_size = (size, size)
    model = exp.get_model().eval()
    preproc = ValTransform(legacy=False)

    def fn(p):
        img = cv2.imread(p)
        ratio = min(size / img.shape[0], size / img.shape[1])
        x, _ = preproc(img, None, exp.test_size)
        x = torch.from_numpy(x).unsqueeze(0).float()
        with torch.no_grad():
            out = postprocess(model(x), exp.num_classes, 0.3, 0.3, class_agnostic=True)
        return None if out[0] is None else out[0][:, :4] / ratio

    p50, p90 = timed(fn, paths, job["n"])
    yield dict(framework="yolox", model=job["model"], format="pytorch (demo)", ms_p50=p50, ms_p90=p90,
               torch_threads=torch.get_num_threads(), export_s=0.0)


def main() -> None:
    job = json.loads(sys.argv[1])
    os.makedirs(job["workdir"], exist_ok=True)
    os.chdir(job["workdir"])  # exports land here
    rows = ultralytics_rows(job) if job["peer"] == "ultralytics" else yolox_rows(job)
    for row in rows:
        print("ROW " + json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
