"""Convert a detection dataset between COCO json, YOLO txt and Pascal VOC xml.

    python tools/convert_dataset.py datasets/coco128.yaml --to yolo --out /data/coco128_yolo
    python tools/convert_dataset.py /data/VOCdevkit/VOC2007 --to coco --out /data/voc07_coco
    python tools/convert_dataset.py --ann instances_val.json --images val2017/ --to voc --out /data/val_voc

Writes the dataset folder and ``OUT/dataset.yaml`` (a descriptor ``build_dataset`` and the other tools
read). Images are symlinked by default (``--copy-images copy`` to copy). Bad input is skipped with a warning,
as when training (``--strict`` stops at the first problem instead). COCO crowd boxes become VOC
``difficult`` objects and are left out of YOLO labels (YOLO has no such flag).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    import cspdet  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convert_dataset.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", nargs="?", help="descriptor YAML, Ultralytics data YAML, or YOLO/VOC folder")
    parser.add_argument("--ann", help="COCO annotation json (with --images)")
    parser.add_argument("--images", dest="image_dir", help="image directory of --ann")
    parser.add_argument("--names", nargs="+", help="class names for a bare YOLO/VOC folder")
    parser.add_argument("--to", required=True, choices=["coco", "yolo", "voc"])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--split", action="append", help="convert only this split (repeatable)")
    parser.add_argument("--copy-images", choices=["symlink", "copy", "none"], default="symlink",
                        help="how images reach the output (none: COCO only, json points at the originals)")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args(argv)

    from check_dataset import dataset_from_args  # tools/ is on sys.path when run as a script

    from cspdet.data import DatasetError, build_dataset, load_descriptor
    from cspdet.data.convert import write_dataset
    from cspdet.fileio import OutputError

    args.images = args.image_dir
    try:
        descriptor = dataset_from_args(args)
        desc = load_descriptor(descriptor)
        splits = {s: build_dataset(descriptor, s, strict=args.strict) for s in (args.split or desc["splits"])}
        stats = write_dataset(splits, args.out, args.to, images=args.copy_images)
    except (DatasetError, ValueError, OutputError) as err:  # OutputError: disk full, read-only --out, ...
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, ds in splits.items():
        if ds.skipped:
            print(ds.skipped.summary())
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
