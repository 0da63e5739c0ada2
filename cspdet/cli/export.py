"""Export a cspdet checkpoint to ONNX, OpenVINO or TorchScript (or a registered format: the choices come from
:mod:`cspdet.runtime.formats`); the file carries the model's metadata.

    cspdet export runs/train/exp/best.pt --format onnx                 # -> runs/train/exp/best.onnx
    cspdet export best.pt --format onnx --out model                     # -> model.onnx
    cspdet export best.pt --format onnx --dynamic                       # any batch and input size
    cspdet export best.pt --format openvino --int8 --data datasets/raccoon.yaml --calib 200
    cspdet export best.pt --format torchscript --img-size 416 416 --out model.torchscript

Use the file like a checkpoint: ``tools/detect.py IMG --weights best.onnx``, ``tools/eval.py CONFIG --weights
best.onnx``, ``Predictor.from_checkpoint("best.onnx")``. The logic lives in :mod:`cspdet.export`.
"""

from __future__ import annotations

import argparse
import logging
import sys

PROG = "cspdet export"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from cspdet.config import Range, range_type
    from cspdet.runtime.formats import deploy_formats

    from .args import make_parser

    formats = deploy_formats()

    parser = make_parser("export", "Export a cspdet checkpoint for deployment: ONNX, OpenVINO or TorchScript, with the model's metadata inside, so the file alone predicts (cspdet predict / val --weights FILE, Predictor.from_checkpoint).", """
  cspdet export runs/train/exp/best.pt --format onnx                 # -> runs/train/exp/best.onnx
  cspdet export best.pt --format openvino --out model                 # -> model.xml + model.bin
  cspdet export best.pt --format onnx --dynamic                       # any batch and input size
  cspdet export best.pt --format openvino --int8 --calib 200          # calibrated on the checkpoint's dataset
  cspdet export best.pt --format torchscript --img-size 416 416 --out model.torchscript
""")
    parser.add_argument("weights", help="cspdet detector checkpoint (best.pt)")
    parser.add_argument("--format", "-f", choices=[f.name for f in formats], default="onnx",
                        help="deploy format: " + ", ".join(f"{f.name} ({f.suffix})" for f in formats)
                        + " (default onnx)")
    parser.add_argument("--img-size", type=range_type("eval.img_size"), nargs="+", default=None, metavar="N",
                        help="input size N or H W (default: the checkpoint's eval size)")
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch and input size")
    parser.add_argument("--batch", type=range_type(Range(1), int), default=1, help="batch size of a static export (default 1)")
    parser.add_argument("--int8", action="store_true",
                        help="post-training int8 quantisation (" + ", ".join(f.name for f in formats if f.int8) + ")")
    parser.add_argument("--data", help="dataset YAML, or a config YAML, whose training images calibrate --int8 "
                        "(default: the dataset the checkpoint records)")
    parser.add_argument("--calib", type=range_type(Range(1), int), default=300, help="calibration images for --int8 (default 300)")
    parser.add_argument("--nms", action="store_true",
                        help="post-processing inside the graph: output (B, max_det, 6) x1 y1 x2 y2 score label")
    parser.add_argument("--nms-free", action=argparse.BooleanOptionalAction, default=None,
                        help="models with a one-to-one branch (csptal_*, yolo26): --nms-free exports its top-k (no NMS "
                        "needed), --no-nms-free the one-to-many branch for NMS; default: the checkpoint's mode")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxsim (ONNX graph simplification)")
    parser.add_argument("--opset", type=range_type(Range(11, 23), int), default=None, help="ONNX opset (default: cspdet's)")
    parser.add_argument("--out", help="output file, given the format's suffix when it has none (model -> model.onnx); "
                        "a folder: WEIGHTS' name inside it (default: WEIGHTS with the format's suffix)")
    return parser.parse_args(argv)


def export(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    args = parse_args(argv)
    from cspdet.export import DEFAULT_OPSET, export_model

    from .args import run_reported

    if args.img_size and len(args.img_size) > 2:
        print(f"{PROG}: error: --img-size takes N or H W, got {len(args.img_size)} numbers", file=sys.stderr)
        return 2
    size = None if not args.img_size else (args.img_size * 2)[:2]
    result, code = run_reported(PROG, lambda: export_model(
        args.weights, args.format, img_size=size, dynamic=args.dynamic, batch=args.batch, int8=args.int8,
        data=args.data, calib=args.calib, nms=args.nms, out=args.out, simplify=not args.no_simplify,
        opset=args.opset or DEFAULT_OPSET, nms_free=args.nms_free))
    if code:
        return code
    info = result.info
    h, w = info["img_size"]
    shape = "dynamic batch and size" if info["dynamic"] else f"batch {info['batch']}, {h}x{w}"
    notes = f"; {'; '.join(result.notes)}" if result.notes else ""
    print(f"wrote {result.path} ({result.format}, {info['precision']}, {shape}, output {info['output']}, "
          f"{result.size_bytes / 1e6:.1f} MB, {result.seconds:.1f} s{notes})")
    return 0
