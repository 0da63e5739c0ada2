"""Dataset doctor: report EVERY problem of a dataset in one pass, with counts and class statistics.

    python tools/check_dataset.py datasets/coco128.yaml            # a dataset descriptor (any format)
    python tools/check_dataset.py --ann instances_val.json --images val2017/   # a bare COCO dataset
    python tools/check_dataset.py path/to/yolo_or_voc_folder [--names a b c]
    python tools/check_dataset.py datasets/coco128.yaml --show grid.jpg       # also draw labelled samples

Every image is decoded (``--no-decode`` skips that). Exit code 0 when the dataset is clean, 1 when any
problem was found, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import cspdet  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def dataset_from_args(args: argparse.Namespace):
    """A descriptor (path or dict) from DATASET / --ann + --images / a folder."""
    from cspdet.data.check import descriptor_for_folder

    if args.ann:
        if not args.images:
            raise SystemExit("error: --ann needs --images DIR")
        ann, images = Path(args.ann).resolve(), Path(args.images).resolve()
        return {"format": "coco", "path": "/", "name": ann.stem,
                "splits": {"data": {"images": str(images), "annotations": str(ann)}}}  # fmt: skip
    if not args.dataset:
        raise SystemExit("error: give DATASET (descriptor YAML or folder) or --ann GT.json --images DIR")
    path = Path(args.dataset)
    if path.is_dir():
        return descriptor_for_folder(path, names=args.names)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    from cspdet.config import Range, range_type

    parser = argparse.ArgumentParser(prog="check_dataset.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", nargs="?", help="dataset descriptor YAML, Ultralytics data YAML, or YOLO/VOC folder")
    parser.add_argument("--ann", help="COCO annotation json (with --images)")
    parser.add_argument("--images", help="image directory of --ann")
    parser.add_argument("--names", nargs="+", help="class names for a bare YOLO/VOC folder")
    parser.add_argument("--split", action="append", help="check only this split (repeatable)")
    parser.add_argument("--no-decode", action="store_true", help="do not decode images (faster, finds fewer problems)")
    parser.add_argument("--max-per-kind", type=range_type(Range(1), int), default=None, help="list at most N problems of each kind")
    parser.add_argument("--no-classes", action="store_true", help="omit the per-class table")
    parser.add_argument("--show", metavar="OUT.jpg", help="also write a grid of labelled samples (first split)")
    args = parser.parse_args(argv)

    from cspdet.data.check import check_dataset, format_report
    from cspdet.data.problems import DatasetError

    try:
        descriptor = dataset_from_args(args)
        reports = check_dataset(descriptor, splits=args.split, decode=not args.no_decode)
    except DatasetError as err:
        print(f"FATAL: {err}")
        return 1
    print(format_report(reports, max_per_kind=args.max_per_kind, classes=not args.no_classes))
    if args.show:
        from show_dataset import write_grid  # tools/ is on sys.path when run as a script

        split = reports[0].split
        if reports[0].fatal is None:
            write_grid(descriptor, split, args.show, augment=False)
            print(f"wrote {args.show}")
    clean = all(r.ok for r in reports)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
