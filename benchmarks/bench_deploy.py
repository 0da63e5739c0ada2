"""Time deployment backends at several model scales, beside the peers' own predictors, in one run on one machine.

    python benchmarks/bench_deploy.py [--presets csptal_n yolo26n_layout csptal_s yolov8n_layout cspdarknet_nano ...]
        [--size 640] [--formats pytorch onnx openvino openvino_bf16 openvino_int8 ...] [--threads 2] [--images 20]
        [--rounds 3] [--peer-python ../benchvenv/bin/python] [--out runs/bench_deploy]

Each cspdet preset is built with random weights (80 classes; latency does not depend on the weights), exported
(ONNX / TorchScript with dynamic shapes, OpenVINO static at ``--size``: ``cspdet.export.benchmark.BenchFormat`` says
why; int8 calibrated on 32 coco128 train images) and timed through ``Predictor`` on coco128 val
photos: read + decode + letterbox + forward + post-process at batch 1 (median and p90) and images / s at batch 8,
with the predictor's defaults (rect letterbox; fp32 unless the format says bf16 / int8; bf16 rows only on CPUs with
native bf16). Right after each preset, its peer of the same scale runs in the benchmark venv (``peer_latency.py``, the same
images, size, threads and timing): Ultralytics ``predict`` in PyTorch and through Ultralytics' own ONNX and
OpenVINO exports (csptal_n <-> YOLO26n, csptal_s <-> YOLO26s; yolo26n_layout <-> YOLO26n, yolo26s_layout <->
YOLO26s and yolov8n_layout <-> YOLOv8n, the same networks), and
YOLOX's demo predictor (cspdarknet_nano <-> YOLOX-Nano, cspdarknet_s <-> YOLOX-S, the same networks). Peers run in
their own interpreter: cspdet never imports Ultralytics (AGPL). For mAP per format of a trained model use
``cspdet benchmark WEIGHTS --data CONFIG``. Machines are shared and noisy: compare ratios measured in one run; every
row is timed ``--rounds`` times, the rows of a preset and its peer interleaved round by round, and reports its
medians. Results: printed as they come, then ``results.csv`` and ``results.md`` in ``--out``.

Ultralytics' OpenVINO row runs in OpenVINO's default precision, which is bf16 on CPUs with native bf16 (AMX /
AVX512-BF16): compare it with cspdet's ``openvino_bf16`` row there, and with ``openvino`` elsewhere.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
COCO128 = REPO.parent / "shared" / "data" / "coco128"
#: cspdet preset -> (peer, peer model of the same scale; the same network where the names say so)
PEERS = {"csptal_n": ("ultralytics", "yolo26n"), "csptal_s": ("ultralytics", "yolo26s"),
         "yolo26n_layout": ("ultralytics", "yolo26n"), "yolo26s_layout": ("ultralytics", "yolo26s"),
         "yolov8n_layout": ("ultralytics", "yolov8n"), "cspdarknet_nano": ("yolox", "yolox-nano"),
         "cspdarknet_s": ("yolox", "yolox-s")}
FIELDS = ["framework", "model", "format", "ms_p50", "ms_p90", "img_s_b8", "torch_threads", "export_s", "rounds"]
MEDIAN_KEYS = ("ms_p50", "ms_p90", "img_s_b8")


def peer_rows(python: str, preset: str, paths: list[str], args: argparse.Namespace, workdir: Path) -> list[dict]:
    """The peer of ``preset`` timed by ``peer_latency.py`` in the benchmark venv (empty, with a message, if absent)."""
    peer, model = PEERS[preset]
    job = dict(peer=peer, model=model, size=args.size, threads=args.threads, images=paths, n=args.images,
               formats=["pytorch", "onnx", "openvino"], workdir=str(workdir / model))
    env = {"OMP_NUM_THREADS": str(args.threads), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    proc = subprocess.run([python, str(REPO / "benchmarks" / "peer_latency.py"), json.dumps(job)],
                          capture_output=True, text=True, env=env)
    rows = [json.loads(ln[4:]) for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
    if proc.returncode != 0:
        print(f"  {peer} {model}: failed ({proc.stderr.strip().splitlines()[-1:] or ['no output']})", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PEERS))
    parser.add_argument("--formats", nargs="+", default=None,
                        help="keys of cspdet.export.benchmark.BENCH_FORMATS (default: its default_formats(), which "
                        "has the bf16 rows only on CPUs with native bf16)")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="rows timed this many times, interleaved; medians")
    parser.add_argument("--peer-python", default=str(REPO.parent / "benchvenv" / "bin" / "python"),
                        help="interpreter of a benchmark venv with ultralytics and yolox (skip peers: '')")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_deploy"))
    args = parser.parse_args()

    import torch

    from cspdet.data.coco_classes import COCO_CLASSES
    from cspdet.export import export_detector
    from cspdet.export.benchmark import BENCH_FORMATS, _latency, _throughput, default_formats
    from cspdet.fileio import atomic_write
    from cspdet.models import DetectorMeta, create_detector, fuse_conv_bn
    from cspdet.runtime import open_model
    from cspdet.runtime.cpu import FastCPUDetector
    from cspdet.runtime.formats import get_format
    from cspdet.runtime.predictor import Predictor

    torch.set_num_threads(args.threads)
    formats = args.formats or default_formats()
    paths = sorted(str(p) for p in (COCO128 / "images" / "val").iterdir())
    hw = (args.size, args.size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    peers = args.peer_python and Path(args.peer_python).is_file()
    if not peers:
        print(f"no peer interpreter at {args.peer_python!r}: cspdet rows only", flush=True)
    rows: list[dict] = []

    def show(row: dict, note: str = "") -> None:
        print(f"{row['framework']:12s} {row['model']:16s} {row['format']:15s} {row['ms_p50']:8.1f} {row['ms_p90']:8.1f}"
              f" {row.get('img_s_b8', float('nan')):9.1f}  {note}", flush=True)

    def report(row: dict) -> None:
        rows.append(row)
        show(row, f"median of {row['rounds']} rounds")

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "calib.yaml"  # int8 calibration: coco128's train split
        config.write_text(f"data:\n  dataset: {REPO / 'datasets' / 'coco128.yaml'}\n")
        print(f"size {args.size}, {args.threads} threads, {args.images} images; end-to-end ms per image\n"
              f"{'framework':12s} {'model':16s} {'format':15s} {'ms p50':>8s} {'ms p90':>8s} {'img/s b8':>9s}",
              flush=True)
        for name in args.presets:
            torch.manual_seed(0)
            model = create_detector(name, num_classes=80).eval()
            model.meta = DetectorMeta(list(COCO_CLASSES), img_size=hw, strides=model.strides, preset=name)
            predictors = {}
            for fmt in formats:
                kind, int8, precision, channels_last, dynamic = BENCH_FORMATS[fmt]
                if kind is None:
                    net = fuse_conv_bn(copy.deepcopy(model))
                    if precision != "fp32" or channels_last:
                        net = FastCPUDetector(net, precision, channels_last)
                else:
                    path = export_detector(model, kind, Path(tmp) / f"{name}_{fmt}{get_format(kind).suffix}",
                                           dynamic=dynamic, int8=int8, data=config, calib=32).path
                    net = open_model(path, threads=args.threads, precision=precision)
                predictors[fmt] = Predictor(net, list(COCO_CLASSES), img_size=hw)
            # rounds: every row once per round, the peer right after cspdet's rows, so that a slow spell of a
            # shared machine lands on all rows of a round; each row reports its median over the rounds
            timed: dict[tuple[str, str], list[dict]] = {}
            for r in range(args.rounds):
                for fmt, predictor in predictors.items():
                    p50, p90 = _latency(predictor, paths, args.images)
                    row = dict(framework="cspdet", model=name, format=fmt, ms_p50=p50, ms_p90=p90,
                               img_s_b8=_throughput(predictor, paths, 32), torch_threads=torch.get_num_threads())
                    timed.setdefault(("cspdet", fmt), []).append(row)
                    show(row, f"round {r + 1}")
                if peers and name in PEERS:
                    for row in peer_rows(args.peer_python, name, paths, args, Path(tmp) / "peers"):
                        timed.setdefault((row["framework"], row["format"]), []).append(row)
                        show(row, f"round {r + 1}")
            for runs in timed.values():
                report({**runs[0], **{k: float(np.median([run[k] for run in runs])) for k in MEDIAN_KEYS
                                      if k in runs[0]}, "rounds": len(runs)})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "results.csv", buf.getvalue())
    table = ["| framework | model | format | ms p50 | ms p90 | img/s b8 |", "|---|---|---|---|---|---|"]
    table += [f"| {r['framework']} | {r['model']} | {r['format']} | {r['ms_p50']:.1f} | {r['ms_p90']:.1f} | "
              f"{r['img_s_b8']:.1f} |" if "img_s_b8" in r else
              f"| {r['framework']} | {r['model']} | {r['format']} | {r['ms_p50']:.1f} | {r['ms_p90']:.1f} | - |"
              for r in rows]
    atomic_write(out / "results.md", "\n".join(table) + "\n")
    print(f"\nwritten: {out / 'results.csv'}, {out / 'results.md'}")


if __name__ == "__main__":
    main()
