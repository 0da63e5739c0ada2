"""Time deployment backends at several model scales: end-to-end latency per image and batch-8 throughput.

    python benchmarks/bench_deploy.py [--presets csptal_n csptal_s cspdarknet_nano cspdarknet_s] [--size 320]
        [--formats pytorch torchscript onnx openvino openvino_int8] [--threads 1] [--images 20]

Each preset is built with random weights (1 class; latency does not depend on the weights), exported (dynamic
shapes; int8 calibrated on 32 coco128 train images) and timed through ``Predictor`` on coco128 val photos: read +
decode + letterbox + forward + post-process at batch 1 (median and p90) and images / s at batch 8. For mAP per
format of a trained model, use ``tools/benchmark.py WEIGHTS --data CONFIG``. Machines are shared and noisy: compare
ratios measured in one run.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
COCO128 = REPO.parent / "shared" / "data" / "coco128"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["csptal_n", "csptal_s", "cspdarknet_nano", "cspdarknet_s"])
    parser.add_argument("--formats", nargs="+", default=["pytorch", "torchscript", "onnx", "openvino", "openvino_int8"])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()

    import torch

    from cspdet.engine.predictor import Predictor
    from cspdet.export import export_detector, load_inference_model
    from cspdet.export.benchmark import BENCH_FORMATS, _latency, _throughput
    from cspdet.models import DetectorMeta, create_detector, fuse_conv_bn

    torch.set_num_threads(args.threads)
    paths = sorted(str(p) for p in (COCO128 / "images" / "val").iterdir())
    hw = (args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "calib.yaml"  # int8 calibration: coco128's train split
        config.write_text(f"data:\n  dataset: {REPO / 'datasets' / 'coco128.yaml'}\n")
        print(f"{'preset':16s} {'format':14s} {'ms p50':>8s} {'ms p90':>8s} {'img/s b8':>9s}", flush=True)
        for name in args.presets:
            torch.manual_seed(0)
            model = create_detector(name, num_classes=1).eval()
            model.meta = DetectorMeta(["object"], img_size=hw, strides=model.strides, preset=name)
            for fmt in args.formats:
                kind, int8 = BENCH_FORMATS[fmt]
                if kind is None:
                    net = fuse_conv_bn(copy.deepcopy(model))
                else:
                    suffix = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".torchscript"}[kind]
                    path = export_detector(model, kind, Path(tmp) / f"{name}_{fmt}{suffix}", dynamic=True, int8=int8,
                                           data=config, calib=32).path
                    net = load_inference_model(path, threads=args.threads)
                predictor = Predictor(net, ["object"], img_size=hw)
                p50, p90 = _latency(predictor, paths, args.images)
                ips = _throughput(predictor, paths, 32)
                print(f"{name:16s} {fmt:14s} {p50:8.1f} {p90:8.1f} {ips:9.1f}", flush=True)


if __name__ == "__main__":
    main()
