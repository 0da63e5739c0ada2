"""Benchmark a checkpoint in every deployment format on this machine: size, mAP, latency, throughput.

    cspdet benchmark runs/train/exp/best.pt                    # the dataset and size the checkpoint records
    cspdet benchmark best.pt --data datasets/raccoon.yaml      # or a config: configs/small_scratch.yaml
    cspdet benchmark best.pt --formats pytorch onnx openvino openvino_int8 --csv bench.csv

For each format: file size, mAP50-95 and mAP50 on the val split (pycocotools), end-to-end latency per
image at batch 1 (read + decode + letterbox + forward + post-process; median and p90) and throughput at batch 8.
Prints a table and writes CSV. The logic lives in :mod:`cspdet.export.benchmark`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

PROG = "cspdet benchmark"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from cspdet.config import Range, range_type
    from cspdet.export.benchmark import BENCH_FORMATS

    from .args import make_parser

    parser = make_parser("benchmark", "Benchmark a checkpoint across deployment formats on this machine: file size, mAP50-95 / mAP50 on the val set (pycocotools), end-to-end latency per image (median, p90) and throughput at batch 8.", """
  cspdet benchmark runs/train/exp/best.pt                    # the dataset and size the checkpoint records
  cspdet benchmark best.pt --data datasets/raccoon.yaml      # or a config: configs/small_scratch.yaml
  cspdet benchmark best.pt --formats pytorch onnx openvino openvino_int8 --csv bench.csv
""")
    parser.add_argument("weights", help="cspdet detector checkpoint (best.pt)")
    parser.add_argument("--data", default=None, help="dataset YAML (its val split), or a config YAML (its dataset's "
                        "val split and eval settings); default: the dataset the checkpoint records")
    parser.add_argument("--formats", nargs="+", choices=list(BENCH_FORMATS), default=None,
                        help="formats to measure (default: all but onnx_int8, and the bf16 rows only on CPUs with "
                        "native bf16)")
    parser.add_argument("--img-size", type=range_type("eval.img_size"), nargs="+", default=None, metavar="N",
                        help="input size N or H W (default: the config's eval.img_size, else the checkpoint's)")
    parser.add_argument("--out", help="folder for the exported files (default: <weights stem>_bench beside it)")
    parser.add_argument("--csv", help="CSV file (default: <out>/benchmark.csv)")
    parser.add_argument("--images", type=range_type(Range(1), int), default=30, help="images timed one by one (default 30)")
    parser.add_argument("--calib", type=range_type(Range(1), int), default=300, help="int8 calibration images (default 300)")
    parser.add_argument("--threads", type=range_type(Range(1), int), default=None, help="intra-op threads of every backend")
    return parser.parse_args(argv)


def benchmark(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    args = parse_args(argv)
    from cspdet.export.benchmark import benchmark as run_benchmark

    from .args import run_reported

    size = None if not args.img_size else (args.img_size * 2)[:2]
    out = Path(args.out) if args.out else Path(args.weights).with_name(Path(args.weights).stem + "_bench")
    path = Path(args.csv or out / "benchmark.csv")
    rows, code = run_reported(PROG, lambda: run_benchmark(
        args.weights, args.data, formats=args.formats, out_dir=out, img_size=size, latency_images=args.images,
        calib=args.calib, threads=args.threads, csv_path=path))
    if code:
        return code
    print(f"wrote {path}")
    return 1 if any(r.error for r in rows) else 0
