#!/usr/bin/env python
"""Draw (augmented) training samples with their boxes and class names into one grid image.

    python tools/show_dataset.py datasets/coco128.yaml --augment --out samples.jpg
    python tools/show_dataset.py datasets/coco128.yaml --split val --num 8

Without ``--augment`` the images are shown as stored (letterboxed to ``--img-size``); with it they go
through the training pipeline (mosaic, affine, mixup, HSV, flip), so you can see that labels follow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from cspdet.data.visualize import write_grid

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python tools/show_dataset.py DATASET [--augment] [--out grid.jpg]``; returns the exit code."""
    from cspdet.config import Range, range_type

    parser = argparse.ArgumentParser(prog="show_dataset.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="dataset descriptor YAML (or Ultralytics data YAML)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--augment", action="store_true", help="show training augmentation")
    parser.add_argument("--no-mosaic", action="store_true", help="with --augment: the final no-mosaic epochs")
    parser.add_argument("--num", type=range_type(Range(1), int), default=16)
    parser.add_argument("--cols", type=range_type(Range(1), int), default=4)
    parser.add_argument("--img-size", type=range_type("data.img_size"), default=640)
    parser.add_argument("--seed", type=range_type("train.seed"), default=0)
    parser.add_argument("--out", default="dataset_samples.jpg")
    args = parser.parse_args(argv)
    from cspdet.data import DatasetError
    from cspdet.fileio import OutputError

    try:
        path = write_grid(args.dataset, args.split, args.out, args.augment, args.num, args.img_size, args.seed,
                          args.cols, args.no_mosaic)  # fmt: skip
    except (DatasetError, OutputError, ValueError) as err:  # ValueError: an image suffix OpenCV cannot write
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
