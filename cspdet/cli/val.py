"""``cspdet val``: COCO box mAP of a checkpoint, or of an existing detections file.

Checkpoint mode needs only the checkpoint: it records its model (spec + weights), the dataset it was trained on
(``meta.dataset``) and its input size (``meta.img_size``); a CONFIG or ``data.dataset=...`` / ``eval.*``
overrides change what is evaluated. File mode (``--ann`` + ``--results``) scores a COCO results json from any
detector. Both write into one folder: ``--out DIR``, or a fresh ``runs/val/<name>`` (``name-2``, ``name-3``, ...
when it holds an earlier evaluation), named after the run of a ``best.pt`` / ``last.pt`` or the file's stem.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .args import UsageError, add_fast_path_args, fast_path_kwargs, make_parser, split_overrides

__all__ = ["numbered_dir", "val", "val_dir_name"]

PROG = "cspdet val"
EXAMPLES = """
  cspdet val runs/train/exp/best.pt                      # the model's own dataset (val split) and input size
  cspdet val runs/train/exp/best.pt data.dataset=datasets/coco128.yaml eval.split=train   # another dataset
  cspdet val best.pt configs/cspdarknet_yolo.yaml eval.batch_size=16 --out runs/val/coco   # a config's data
  cspdet val --ann instances_val2017.json --results detections.json      # score any detector's results file

writes metrics.json (the 12 COCO stats and per_class), the PR / F1 / P / R curves and confusion matrices (*.png)
and, for a checkpoint, detections.json
(COCO results: xywh, original ids) into --out, by default runs/val/<run name> (then <run name>-2, -3, ...).
"""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The val command line: inputs and overrides in any order (see :mod:`cspdet.cli.args`)."""
    from ..config import Range, range_type

    rest, overrides = split_overrides(argv, ("eval", "data", "model", "train"))
    parser = make_parser("val", "COCO mAP of a checkpoint (WEIGHTS, on the dataset it was trained on unless told "
                         "otherwise) or of a detections file (--ann GT.json --results DETS.json).", EXAMPLES)
    parser.add_argument("inputs", nargs="*", metavar="WEIGHTS|CONFIG",
                        help="the checkpoint to evaluate and, optionally, a config YAML whose data/eval it uses")
    parser.add_argument("--weights", "-w", help="the checkpoint (same as the WEIGHTS argument)")
    parser.add_argument("--ann", help="COCO ground-truth json (file mode)")
    parser.add_argument("--results", help="COCO detections json: [{image_id, category_id, bbox, score}] (file mode)")
    parser.add_argument("--out", help="output folder (default: runs/val/<name>, numbered per evaluation)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: train.device, auto)")
    parser.add_argument("--backend", choices=("pycocotools", "faster_coco_eval"), default=None,
                        help="COCO evaluation backend (default: eval.backend, pycocotools)")
    parser.add_argument("--pre-nms-topk", type=range_type(Range(1), int), default=None, metavar="K",
                        help="checkpoint mode: at most K top-scoring points per image enter NMS (faster at conf "
                        "0.001, may lower mAP slightly; default: no cap, as YOLOX)")
    add_fast_path_args(parser)
    parser.add_argument("--no-plots", action="store_true",
                        help="do not write the PR / F1 / P / R curves and confusion matrices")
    parser.add_argument("--all-classes", action="store_true", help="also list classes without ground truth")
    args = parser.parse_args(rest)
    args.overrides = overrides
    args.config = None
    for item in args.inputs:
        if item.endswith((".yaml", ".yml")):
            if args.config is not None:
                parser.error(f"two configs: {args.config} and {item}")
            args.config = item
        elif args.weights not in (None, item):
            parser.error(f"two checkpoints: {args.weights} and {item}")
        else:
            args.weights = item
    return args


def val_dir_name(path: str | os.PathLike) -> str:
    """The output folder name for an input file: the run of a ``best.pt`` / ``last.pt`` (``runs/train/exp/best.pt``
    -> ``exp``), else the file's stem (``yolox_s.pt`` -> ``yolox_s``)."""
    p = Path(path).absolute()
    if p.name in ("best.pt", "last.pt") and p.parent.name:
        return p.parent.name
    return p.stem or "val"


def numbered_dir(parent: str | os.PathLike, name: str) -> Path:
    """Create and return ``parent/name``, or ``name-2``, ``name-3``, ... when that already exists: each call gets
    a folder of its own (``mkdir`` is atomic, so two evaluations started together never share one).

    Raises:
        OutputError: ``parent`` cannot be created or written (read-only, full, a file in the way).
    """
    from ..fileio import as_output_error, make_dirs

    parent = make_dirs(parent)
    n = 1
    while True:
        candidate = parent / (name if n == 1 else f"{name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
        except OSError as err:
            raise as_output_error(err, candidate) from None


def _out_dir(args: argparse.Namespace, name_from: str) -> Path:
    """``--out`` (created if needed), or a fresh numbered ``runs/val/<name>``."""
    from ..fileio import make_dirs

    if args.out:
        return make_dirs(args.out)
    return numbered_dir(Path("runs") / "val", val_dir_name(name_from))


def _print_metrics(metrics: Any, all_classes: bool) -> None:
    print(metrics.summary)
    print()
    print(metrics.format_table(include_empty=all_classes))


def run_file_mode(args: argparse.Namespace) -> int:
    """Score ``--results`` against ``--ann``; writes metrics.json (+ the evaluation plots) into the output folder."""
    from ..engine.coco_metrics import coco_evaluate, load_coco_gt, load_detections

    if args.weights or args.config or args.overrides or args.pre_nms_topk is not None:
        raise UsageError("--ann/--results score an existing detections file: give no WEIGHTS, CONFIG, overrides "
                         "or --pre-nms-topk")
    if not (args.ann and args.results):
        raise UsageError("file mode needs both --ann GT.json and --results DETS.json")
    gt = load_coco_gt(args.ann)
    dets = load_detections(args.results)
    metrics = coco_evaluate(gt, dets, backend=args.backend or "pycocotools", gt_name=args.ann, det_name=args.results)
    _print_metrics(metrics, args.all_classes)
    out = _out_dir(args, args.results)
    written = [metrics.save_json(out / "metrics.json")]
    if not args.no_plots:
        from ..engine.plots import write_eval_plots

        written += write_eval_plots(out, metrics, gt, dets)
    print(f"\nwrote {', '.join(map(str, written))}")
    return 0


def eval_config(args: argparse.Namespace) -> Any:
    """The evaluation's config: CONFIG + overrides, or the checkpoint's own dataset and input size + overrides.

    Raises:
        UsageError: no dataset known (a YOLOX file, a checkpoint without ``meta.dataset``) or not found from here.
    """
    from ..config import load_config, parse_override
    from ..models import YoloxWeightsError, infer_yolox_preset
    from ..runtime.checkpoint import CheckpointError
    from ..runtime.open import load_backend
    from ..runtime.weights import checkpoint_meta, read_weights

    cfg = load_config(args.config, args.overrides)
    given = {parse_override(text)[0] for text in args.overrides}
    file = read_weights(args.weights)
    if file.exported:  # an exported file: its metadata travels inside it
        if args.config is not None:
            return cfg
        return _from_meta(cfg, given, load_backend(file.path).meta.to_dict(), args.weights)
    if file.kind == "yolox":  # an official YOLOX file: the model is read from its weights
        if args.config is None and "model.name" not in given:
            try:
                cfg.model.name, cfg.model.num_classes = infer_yolox_preset(file.obj)
            except YoloxWeightsError as err:
                raise CheckpointError(f"{args.weights}: {err}") from None
            if "eval.img_size" not in given and cfg.model.name in ("cspdarknet_nano", "cspdarknet_tiny"):
                cfg.eval.img_size = [416, 416]  # YOLOX-Nano and -Tiny are evaluated at 416
        if args.config is None and "data.dataset" not in given:
            raise UsageError(f"{args.weights}: an official YOLOX checkpoint records no dataset: give one "
                             f"(data.dataset=datasets/coco.yaml) or convert it first (cspdet convert {args.weights} "
                             "--out converted.pt)")
        return cfg
    if args.config is not None:
        return cfg
    return _from_meta(cfg, given, checkpoint_meta(file.obj, args.weights), args.weights)


def _from_meta(cfg: Any, given: set[str], meta: dict[str, Any], weights: str) -> Any:
    """``cfg`` with the dataset and input size a model's metadata records, where the command line set neither.
    The dataset is looked for where the training command named it (relative to here) and at its absolute location
    when the model was saved."""
    from ..runtime.weights import recorded_dataset

    if "eval.img_size" not in given and meta.get("img_size"):
        cfg.eval.img_size = [int(v) for v in meta["img_size"]]
    if "data.dataset" not in given:
        found, tried = recorded_dataset(meta)
        if not tried:
            raise UsageError(f"{weights}: the checkpoint does not record the dataset it was trained on; give "
                             "one: data.dataset=DESCRIPTOR.yaml (or a CONFIG)")
        if found is None:
            dataset = tried[0]
            where = "" if Path(dataset).is_absolute() else f" (relative to where it was trained) from {Path.cwd()}"
            also = f", nor at {', '.join(tried[1:])}" if tried[1:] else ""
            raise UsageError(f"{weights}: its dataset {dataset} is not found{where}{also}; give "
                             "data.dataset=DESCRIPTOR.yaml")
        cfg.data.dataset = found
    return cfg


# the model keys that describe the network (weights / weights_format say how to initialise it)
_NETWORK_KEYS = ("name", "num_classes", "depth", "width", "depthwise", "act", "stem_channels", "stage_defs")


def warn_config_model_mismatch(args: argparse.Namespace, cfg: Any, model: Any) -> str | None:
    """One warning line when the CONFIG's model section (or ``model.*`` overrides) describes another network than
    the checkpoint holds: what the config said, what the checkpoint is, and that the checkpoint's own network is
    evaluated (by design: a checkpoint records its network; an official YOLOX file, which does not, is built from
    the config and is not compared). Returns the message (None when they agree or the config says nothing)."""
    import torch

    from ..config import ConfigError, parse_override, read_raw_config
    from ..engine.build import build_detector
    from ..runtime.checkpoint import CheckpointError
    from ..runtime.weights import read_weights

    said = {parse_override(t)[0].partition(".")[2] for t in args.overrides if t.startswith("model.")}
    if args.config is not None:
        try:
            raw_model = read_raw_config(args.config).get("model")
        except ConfigError:
            raw_model = None
        said |= set(raw_model) if isinstance(raw_model, dict) else set()
    said = [k for k in _NETWORK_KEYS if k in said]
    if not said:
        return None
    try:
        if read_weights(args.weights).kind == "yolox":
            return None  # built from the config: nothing to disagree with
    except CheckpointError:
        return None
    def size(m: Any) -> str:
        n = sum(p.numel() for p in m.parameters()) if isinstance(m, torch.nn.Module) else 0
        return f"{n / 1e6:.2f} M parameters, " if n else ""

    spec = getattr(model, "spec", None)
    wanted_text = ""
    try:
        with torch.device("meta"):  # the network's structure only: no memory, no initialisation
            wanted = build_detector(cfg.model)
        same = wanted.num_classes == model.num_classes and (spec is None or _network(wanted.spec) == _network(spec))
        wanted_text = f" ({size(wanted)}{wanted.num_classes} classes)"
    except (ConfigError, RuntimeError, ValueError, TypeError) as err:
        same, wanted_text = False, f" (which cannot be built: {' '.join(str(err).split())[:120]})"
    if same:
        return None
    preset = getattr(getattr(model, "meta", None), "preset", None)
    is_text = f"{preset!r}" if preset else "an unnamed network"
    is_text += f" ({size(model)}{model.num_classes} classes)"
    said_text = ", ".join(f"model.{k}={getattr(cfg.model, k)!r}" for k in said) + wanted_text
    where = args.config if args.config is not None else "the command line"
    msg = (f"{where} says {said_text}, but {args.weights} holds {is_text}; evaluating the checkpoint's own network "
           "(the config's model section is not used)")
    logging.getLogger("cspdet.val").warning("%s", msg)
    return msg


def _network(spec: Any) -> Any:
    """A detector spec as data without what only initialises it (the head's bias prior)."""
    data = spec.to_dict()
    if isinstance(data.get("head"), dict):
        data["head"] = {k: v for k, v in data["head"].items() if k != "prior_prob"}
    return data


def run_checkpoint_mode(args: argparse.Namespace) -> int:
    """Evaluate the checkpoint on the val split of its dataset (or the one given)."""
    from ..engine.distributed import select_device
    from ..engine.evaluator import COCOEvaluator, load_detector_for_eval

    if not args.weights:
        raise UsageError("no checkpoint: give WEIGHTS (e.g. runs/train/<name>/best.pt), or --ann and --results")
    cfg = eval_config(args)
    if args.backend:
        cfg.eval.backend = args.backend
    try:
        device = select_device(args.device or cfg.train.device)
    except RuntimeError as err:  # e.g. cuda asked for on a machine without it
        raise UsageError(f"{str(err).split(' (use ')[0]}; pass --device cpu") from None
    evaluator = COCOEvaluator.from_config(cfg, device=device, pre_nms_topk=args.pre_nms_topk)
    model = load_detector_for_eval(args.weights, cfg, evaluator.class_names, device=device, **fast_path_kwargs(args))
    warn_config_model_mismatch(args, cfg, model)
    out = _out_dir(args, args.weights)
    n = len(evaluator.coco_gt.getImgIds())
    settings = evaluator.settings_for(model)  # the config's, else the model's head's defaults
    print(f"evaluating {args.weights} on {cfg.data.dataset} ({cfg.eval.split}, {n} images) at "
          f"{cfg.eval.img_size[0]}x{cfg.eval.img_size[1]}, conf {settings['conf']}, iou {settings['iou']}"
          + (f", pre-NMS top-{args.pre_nms_topk}" if args.pre_nms_topk else "") + f", device {device}")
    metrics = evaluator.evaluate(model, output_dir=out, plots=not args.no_plots, progress=sys.stderr.isatty())
    _print_metrics(metrics, args.all_classes)
    print(f"\n{metrics.extra.get('ms_per_image', 0):.1f} ms/image (model + NMS), COCO eval "
          f"{metrics.eval_seconds:.2f} s ({metrics.backend})")
    print(f"wrote {out / 'metrics.json'}, {out / 'detections.json'}"
          + ("" if args.no_plots else ", the PR / F1 / P / R curves and confusion matrices (*.png)"))
    return 0


def val(argv: Sequence[str]) -> int:
    """``cspdet val``; returns the exit code (2: usage, config, checkpoint or data errors; 1: cannot write)."""
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    args = parse_args(argv)
    from ..config import ConfigError
    from ..data import DatasetError, ImageReadError
    from ..runtime.checkpoint import CheckpointError
    from ..engine.coco_metrics import EvaluationError
    from ..fileio import OutputError

    try:
        if args.out and Path(args.out).suffix.lower() == ".json":  # checked first: before any work is done
            raise UsageError(f"--out {args.out}: --out is a folder (metrics.json and the plots are written inside "
                             "it); give a folder name")
        if args.ann or args.results:
            return run_file_mode(args)
        return run_checkpoint_mode(args)
    except OutputError as err:  # disk full, read-only --out, ...: the files written before are intact
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except (UsageError, ConfigError, CheckpointError, EvaluationError, DatasetError, ImageReadError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
