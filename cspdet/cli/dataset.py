"""``cspdet check`` (the dataset doctor) and ``cspdet convert`` (datasets between COCO / YOLO / VOC, and official
YOLOX weights into a cspdet checkpoint)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .args import UsageError, make_parser, split_overrides

__all__ = ["check", "convert", "dataset_from_args"]

CHECK_EXAMPLES = """
  cspdet check datasets/coco128.yaml                       # a dataset descriptor (any format)
  cspdet check --ann instances_val.json --images val2017/  # a bare COCO dataset
  cspdet check path/to/yolo_or_voc_folder --names cat dog  # a bare YOLO / VOC folder
  cspdet check datasets/coco128.yaml --split val --show grid.jpg   # also draw labelled samples

Every image is decoded (--no-decode skips that). Exit code 0 when the dataset is clean, 1 when any problem was
found, 2 for a usage error. The class table lists the dataset's category ids (as cspdet val does).
"""

CONVERT_EXAMPLES = """
  cspdet convert datasets/coco128.yaml --to yolo --out datasets/coco128_yolo     # loadable by Ultralytics too
  cspdet convert /data/VOCdevkit/VOC2007 --to coco --out /data/voc07_coco
  cspdet convert --ann instances_val.json --images val2017/ --to voc --out /data/val_voc
  cspdet convert yolox_s.pth --out yolox_s_cspdet.pt      # official YOLOX weights: the size is read from them
  cspdet convert yolox_custom.pth --from yolox --names cat dog --img-size 416 --out cats.pt
  cspdet convert yolo26n.pt --out yolo26n_cspdet.pt      # Ultralytics YOLOv8 / YOLO11 / YOLO26 (read safely)
  cspdet convert yolov8s.pt --model csptal_s --out csptal_s.pt   # YOLOv8 weights into the NMS-free csptal_s

Datasets: writes the dataset folder and OUT/dataset.yaml (a descriptor with an absolute path: cspdet and
Ultralytics read it). Images are symlinked by default (--copy-images copy to copy). Bad input is skipped with a
warning, as when training (--strict stops at the first problem). COCO crowd boxes become VOC difficult objects
and are left out of YOLO labels. Weights: a .pth / .pt file is taken as model weights: an official YOLOX
checkpoint, or an Ultralytics YOLOv8 / YOLO11 / YOLO26 detection checkpoint (read without running any of its code;
the weights keep their licence, recorded in meta.source).
"""


def dataset_from_args(args: argparse.Namespace) -> str | dict[str, Any]:
    """A descriptor (path or dict) from DATASET / ``--ann`` + ``--images`` / a YOLO or VOC folder.

    Raises:
        UsageError: neither a dataset nor ``--ann`` + ``--images``.
    """
    from ..data.check import descriptor_for_folder

    if args.ann:
        if not args.images:
            raise UsageError("--ann needs --images DIR")
        ann, images = Path(args.ann).resolve(), Path(args.images).resolve()
        return {"format": "coco", "path": "/", "name": ann.stem,
                "splits": {"data": {"images": str(images), "annotations": str(ann)}}}  # fmt: skip
    if not args.dataset:
        raise UsageError("give DATASET (descriptor YAML or folder) or --ann GT.json --images DIR")
    path = Path(args.dataset)
    if path.is_dir():
        return descriptor_for_folder(path, names=args.names)
    return str(path)


def _no_overrides(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    rest, overrides = split_overrides(argv)
    if overrides:
        parser.error(f"{overrides[0]}: this command takes no config overrides (see --help)")
    return rest


def check(argv: Sequence[str]) -> int:
    """``cspdet check DATASET``: every problem of a dataset in one pass; returns 0 clean, 1 problems, 2 usage."""
    from ..config import Range, range_type

    parser = make_parser("check", "Dataset doctor: report EVERY problem of a dataset in one pass, with counts and "
                         "class statistics.", CHECK_EXAMPLES)
    parser.add_argument("dataset", nargs="?", help="dataset descriptor YAML, Ultralytics data YAML, or YOLO/VOC folder")
    parser.add_argument("--ann", help="COCO annotation json (with --images)")
    parser.add_argument("--images", help="image directory of --ann")
    parser.add_argument("--names", nargs="+", help="class names for a bare YOLO/VOC folder")
    parser.add_argument("--split", action="append", help="check only this split (repeatable)")
    parser.add_argument("--no-decode", action="store_true", help="do not look at the images (annotations only)")
    parser.add_argument("--decode", action="store_true", help="decode every image in full (finds corrupt JPEG data "
                        "too; ~20x slower than the default check of headers, end markers and PNG checksums)")
    parser.add_argument("--workers", type=range_type(Range(1), int), default=None,
                        help="threads checking images (default: the free cores)")
    parser.add_argument("--max-per-kind", type=range_type(Range(1), int), default=None,
                        help="list at most N problems of each kind")
    parser.add_argument("--no-classes", action="store_true", help="omit the per-class table")
    parser.add_argument("--show", metavar="OUT.jpg", help="also write a grid of labelled samples (first split)")
    args = parser.parse_args(_no_overrides(parser, argv))

    from ..data.check import check_dataset, format_report
    from ..data.problems import DatasetError
    from ..data.visualize import write_grid
    from ..fileio import OutputError

    try:
        descriptor = dataset_from_args(args)
        if args.decode and args.no_decode:
            raise UsageError("--decode and --no-decode exclude each other")
        reports = check_dataset(descriptor, splits=args.split, decode=not args.no_decode, full_decode=args.decode,
                                workers=args.workers)  # fmt: skip
    except UsageError as err:
        print(f"cspdet check: error: {err}", file=sys.stderr)
        return 2
    except DatasetError as err:
        print(f"FATAL: {err}")
        return 1
    print(format_report(reports, max_per_kind=args.max_per_kind, classes=not args.no_classes))
    if args.show and reports[0].fatal is None:
        try:
            print(f"wrote {write_grid(descriptor, reports[0].split, args.show, augment=False)}")
        except (OutputError, ValueError) as err:
            print(f"cspdet check: error: {err}", file=sys.stderr)
            return 1
    return 0 if all(r.ok for r in reports) else 1


def _is_weights_file(path: str | None) -> bool:
    """A file that ``torch.save`` wrote (zip archive or legacy pickle): converted as model weights."""
    from ..runtime.checkpoint import is_torch_file

    return bool(path) and is_torch_file(path)


def convert(argv: Sequence[str]) -> int:
    """``cspdet convert``: a dataset into COCO / YOLO / VOC, or YOLOX weights into a cspdet checkpoint."""
    from ..config import range_type

    parser = make_parser("convert", "Convert a detection dataset between COCO json, YOLO txt and Pascal VOC xml, "
                         "or an official YOLOX checkpoint into a cspdet checkpoint.", CONVERT_EXAMPLES)
    parser.add_argument("dataset", nargs="?", metavar="SOURCE",
                        help="descriptor YAML, Ultralytics data YAML, YOLO/VOC folder, or a YOLOX .pth")
    parser.add_argument("--from", dest="source_kind", choices=("auto", "dataset", "yolox", "ultralytics"),
                        default="auto", help="what SOURCE is (default auto: a torch checkpoint file is YOLOX or "
                        "Ultralytics weights, told apart by its contents)")
    parser.add_argument("--out", required=True, help="output folder (dataset) or checkpoint file (weights)")
    group = parser.add_argument_group("datasets")
    group.add_argument("--to", choices=["coco", "yolo", "voc"], help="output format (required for a dataset)")
    group.add_argument("--ann", help="COCO annotation json (with --images)")
    group.add_argument("--images", help="image directory of --ann")
    group.add_argument("--split", action="append", help="convert only this split (repeatable)")
    group.add_argument("--copy-images", choices=["symlink", "copy", "none"], default="symlink",
                       help="how images reach the output (none: COCO only, json points at the originals)")
    group.add_argument("--strict", action="store_true", help="stop at the first bad image or label")
    group = parser.add_argument_group("YOLOX / Ultralytics weights")
    group.add_argument("--model", default=None, help="the matching cspdet preset, cspdarknet_{nano,tiny,s,m,l,x} "
                       "(YOLOX), yolov8/yolo11/yolo26<size>_layout or csptal_<size> (Ultralytics) (default: read from "
                       "the weights)")
    group.add_argument("--img-size", type=range_type("eval.img_size"), default=None,
                       help="inference size (default 416 nano/tiny, else 640)")
    group.add_argument("--names", nargs="+", default=None,
                       help="class names (YOLOX: default COCO's 80; a bare YOLO/VOC folder: its classes)")
    args = parser.parse_args(_no_overrides(parser, argv))
    weights = args.source_kind in ("yolox", "ultralytics") or (args.source_kind == "auto"
                                                                and _is_weights_file(args.dataset))
    try:
        return _convert_weights(args) if weights else _convert_dataset(args)
    except UsageError as err:
        parser.error(str(err))
        return 2  # not reached: parser.error exits


def _convert_weights(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..engine.build import convert_yolox_checkpoint
    from ..runtime.checkpoint import CheckpointError
    from ..fileio import OutputError

    extra = [flag for flag, given in (("--to", args.to), ("--ann", args.ann), ("--images", args.images),
                                      ("--split", args.split), ("--strict", args.strict)) if given]
    if extra:
        raise UsageError(f"{extra[0]} is for datasets; {args.dataset} is converted as model weights")
    if not args.dataset:
        raise UsageError("give the YOLOX checkpoint to convert")
    try:
        if args.source_kind == "ultralytics" or (args.source_kind == "auto" and _is_ultralytics(args.dataset)):
            ckpt = _convert_ultralytics(args)
        else:
            ckpt = convert_yolox_checkpoint(args.dataset, args.out, args.model, args.img_size, args.names)
    except (CheckpointError, ConfigError) as err:
        print(f"cspdet convert: error: {err}", file=sys.stderr)
        return 2
    except OutputError as err:
        print(f"cspdet convert: error: {err}", file=sys.stderr)
        return 1
    meta = ckpt["meta"]
    print(f"wrote {args.out}: {meta['preset']}, {len(meta['class_names'])} classes, img_size {meta['img_size'][0]}")
    return 0


def _is_ultralytics(path: str) -> bool:
    """An Ultralytics pickle, or a plain state dict with its layer names (the runtime decides what a file is)."""
    from ..runtime.checkpoint import CheckpointError
    from ..runtime.weights import read_weights

    try:
        return read_weights(path).kind == "ultralytics"
    except CheckpointError:  # not readable as weights: the YOLOX path reports why
        return False


def _convert_ultralytics(args: argparse.Namespace) -> dict:
    """``cspdet convert`` of an Ultralytics checkpoint: read safely, converted, ``--names`` / ``--img-size`` applied,
    written atomically."""
    from ..config import ConfigError
    from ..runtime.checkpoint import CheckpointError, save_checkpoint
    from ..models.ultralytics_weights import UltralyticsWeightsError, convert_ultralytics

    try:
        ckpt = convert_ultralytics(args.dataset, args.model)
    except UltralyticsWeightsError as err:
        raise CheckpointError(str(err)) from None
    meta = ckpt["meta"]
    if args.names is not None:
        if len(args.names) != len(meta["class_names"]):
            raise ConfigError(f"--names: {len(args.names)} class names but {args.dataset} has "
                              f"{len(meta['class_names'])} classes")
        meta["class_names"], meta["category_ids"] = list(args.names), list(range(len(args.names)))
    if args.img_size is not None:
        meta["img_size"] = [args.img_size, args.img_size]
    save_checkpoint(ckpt, args.out)
    return ckpt


def _convert_dataset(args: argparse.Namespace) -> int:
    from ..data import DatasetError, build_dataset, load_descriptor
    from ..data.convert import write_dataset
    from ..fileio import OutputError

    extra = [flag for flag, given in (("--model", args.model), ("--img-size", args.img_size)) if given]
    if extra:
        raise UsageError(f"{extra[0]} is for YOLOX weights; {args.dataset or args.ann} is converted as a dataset")
    if not args.to:
        raise UsageError("a dataset needs --to coco|yolo|voc")
    descriptor = dataset_from_args(args)
    try:
        desc = load_descriptor(descriptor)
        splits = {s: build_dataset(descriptor, s, strict=args.strict) for s in (args.split or desc["splits"])}
        stats = write_dataset(splits, args.out, args.to, images=args.copy_images)
    except (DatasetError, ValueError, OutputError) as err:  # OutputError: disk full, read-only --out, ...
        print(f"cspdet convert: error: {err}", file=sys.stderr)
        return 1
    for ds in splits.values():
        if ds.skipped:
            print(ds.skipped.summary())
    print(json.dumps(stats, indent=2))
    return 0
