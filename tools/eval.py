"""COCO box evaluation (mAP) of a checkpoint, or of an existing detections file.

Evaluate a trained checkpoint on the validation split of a config's dataset::

    python tools/eval.py configs/cspdarknet_yolo.yaml --weights runs/train/exp/best.pt [eval.batch_size=16 ...]

Score a COCO results json from any detector against COCO ground truth (no model needed)::

    python tools/eval.py --ann instances_val2017.json --results detections.json [--out metrics.json]

Prints pycocotools' 12-line summary and a per-class AP / AP50 table. Writes ``metrics.json`` (the 12 stats
under AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl, plus ``per_class``) and the pictures
``pr_curve.png``, ``f1_curve.png``, ``p_curve.png``, ``r_curve.png``, ``confusion_matrix.png`` and
``confusion_matrix_normalized.png`` (not with ``--no-plots``); with a checkpoint also ``detections.json``
(COCO results, xywh, original ids).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

try:
    import cspdet  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROG = "eval.py"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from cspdet.config import Range, range_type

    parser = argparse.ArgumentParser(
        prog=PROG, description="COCO mAP of a checkpoint (CONFIG --weights W) or of a detections file "
        "(--ann GT.json --results DETS.json).",
    )
    parser.add_argument("args", nargs="*", metavar="CONFIG [section.key=value ...]",
                        help="config YAML, then optional overrides such as eval.batch_size=16")
    parser.add_argument("--weights", "-w", help="cspdet detector checkpoint (best.pt / last.pt of a run)")
    parser.add_argument("--ann", help="COCO ground-truth json (file mode)")
    parser.add_argument("--results", help="COCO detections json: [{image_id, category_id, bbox, score}] (file mode)")
    parser.add_argument("--out", help="checkpoint mode: output folder (default runs/eval/<weights name>); "
                        "file mode: where to write metrics.json (default: not written)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the config's train.device)")
    parser.add_argument("--backend", choices=("pycocotools", "faster_coco_eval"), default=None,
                        help="COCO evaluation backend (default: the config's eval.backend, else pycocotools)")
    parser.add_argument("--pre-nms-topk", type=range_type(Range(1), int), default=None, metavar="K",
                        help="checkpoint mode: at most K top-scoring points per image enter NMS (faster at conf "
                        "0.001, may lower mAP slightly; default: no cap, as YOLOX)")
    parser.add_argument("--no-plots", action="store_true",
                        help="do not write the PR / F1 / P / R curves and confusion matrices")
    parser.add_argument("--all-classes", action="store_true", help="also list classes without ground truth")
    return parser.parse_intermixed_args(argv)


def _print_metrics(metrics, all_classes: bool) -> None:
    print(metrics.summary)
    print()
    print(metrics.format_table(include_empty=all_classes))


def run_file_mode(args: argparse.Namespace) -> int:
    from cspdet.engine.coco_metrics import coco_evaluate, load_coco_gt, load_detections

    if args.args or args.weights or args.pre_nms_topk is not None:
        raise _UsageError("--ann/--results score an existing detections file: give no CONFIG, --weights or "
                          "--pre-nms-topk")
    if not (args.ann and args.results):
        raise _UsageError("file mode needs both --ann GT.json and --results DETS.json")
    gt = load_coco_gt(args.ann)
    dets = load_detections(args.results)
    metrics = coco_evaluate(gt, dets, backend=args.backend or "pycocotools", gt_name=args.ann, det_name=args.results)
    _print_metrics(metrics, args.all_classes)
    if args.out:
        out = metrics.save_json(args.out)
        print(f"\nwrote {out}")
        if not args.no_plots:
            from cspdet.engine.plots import write_eval_plots

            pictures = write_eval_plots(out.parent, metrics, gt, dets)
            print(f"wrote {', '.join(p.name for p in pictures)} to {out.parent}")
    return 0


def run_checkpoint_mode(args: argparse.Namespace) -> int:
    from cspdet.config import load_config
    from cspdet.engine.distributed import select_device
    from cspdet.engine.evaluator import COCOEvaluator, load_detector_for_eval

    if not args.args:
        raise _UsageError("give a CONFIG and --weights, or --ann and --results (see --help)")
    config, overrides = args.args[0], args.args[1:]
    if "=" in config:
        raise _UsageError(f"the first argument must be the config file, got the override {config!r}")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise _UsageError(f"unexpected argument {bad[0]!r}: overrides look like section.key=value")
    if not args.weights:
        raise _UsageError("no --weights: give the checkpoint to evaluate (e.g. runs/train/<name>/best.pt)")
    cfg = load_config(config, overrides)
    if args.backend:
        cfg.eval.backend = args.backend
    try:
        device = select_device(args.device or cfg.train.device)
    except RuntimeError as err:  # e.g. cuda asked for on a machine without it
        raise _UsageError(f"{str(err).split(' (use ')[0]}; pass --device cpu") from None
    evaluator = COCOEvaluator.from_config(cfg, pre_nms_topk=args.pre_nms_topk)
    model = load_detector_for_eval(args.weights, cfg, evaluator.class_names, device=device)
    out = Path(args.out) if args.out else Path("runs") / "eval" / Path(args.weights).stem
    n = len(evaluator.coco_gt.getImgIds())
    print(f"evaluating {args.weights} on {cfg.data.dataset} ({cfg.eval.split}, {n} images) at "
          f"{cfg.eval.img_size[0]}x{cfg.eval.img_size[1]}, conf {cfg.eval.conf}, iou {cfg.eval.iou}"
          + (f", pre-NMS top-{args.pre_nms_topk}" if args.pre_nms_topk else "") + f", device {device}")
    metrics = evaluator.evaluate(model, output_dir=out, plots=not args.no_plots, progress=sys.stderr.isatty())
    _print_metrics(metrics, args.all_classes)
    print(f"\n{metrics.extra.get('ms_per_image', 0):.1f} ms/image (model + NMS), COCO eval "
          f"{metrics.eval_seconds:.2f} s ({metrics.backend})")
    print(f"wrote {out / 'metrics.json'}, {out / 'detections.json'}"
          + ("" if args.no_plots else ", the PR / F1 / P / R curves and confusion matrices (*.png)"))
    return 0


class _UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    args = parse_args(argv)
    from cspdet.config import ConfigError
    from cspdet.data import DatasetError, ImageReadError
    from cspdet.engine.checkpoint import CheckpointError
    from cspdet.engine.coco_metrics import EvaluationError
    from cspdet.fileio import OutputError

    try:
        if args.ann or args.results:
            return run_file_mode(args)
        return run_checkpoint_mode(args)
    except OutputError as err:  # disk full, read-only --out, ...: the files written before are intact
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except (_UsageError, ConfigError, CheckpointError, EvaluationError, DatasetError, ImageReadError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
