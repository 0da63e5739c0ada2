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
from typing import Any

try:
    import cspdet  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_grid(
    descriptor: Any, split: str, out: str, augment: bool = False, num: int = 16, img_size: int = 640,
    seed: int = 0, cols: int = 4, no_mosaic: bool = False,
) -> Path:  # fmt: skip
    """Render ``num`` samples of ``split`` into ``out`` (any image format OpenCV writes)."""
    import cv2
    import numpy as np

    from cspdet.data import AugmentConfig, TrainDataset, ValDataset, build_dataset
    from cspdet.data.visualize import draw_boxes, make_grid

    ds = build_dataset(descriptor, split)
    if augment:
        view = TrainDataset(ds, AugmentConfig(img_size=(img_size, img_size)), seed=seed)
        if no_mosaic:
            view.close_mosaic()
    else:
        view = ValDataset(ds, img_size)
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(ds))[:num] if augment else np.arange(min(num, len(ds)))
    tiles = []
    for i in picks.tolist():
        image, targets, image_id, _, _ = view[i]
        tile = draw_boxes(image, targets[:, 1:], targets[:, 0].astype(np.int64), ds.class_names)
        cv2.putText(tile, f"id {image_id}", (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
        tiles.append(tile)
    grid = make_grid(tiles, cols=cols, cell=min(img_size, 480))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise SystemExit(f"error: could not write {path} (unsupported extension?)")
    return path


def main(argv: list[str] | None = None) -> int:
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

    try:
        path = write_grid(args.dataset, args.split, args.out, args.augment, args.num, args.img_size, args.seed,
                          args.cols, args.no_mosaic)  # fmt: skip
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
