"""How many real gt boxes would never become positives under task-aligned assignment, with and without the
small-box widening (YOLO26's STAL) of :class:`cspdet.det.TaskAlignedAssigner`.

    python benchmarks/measure_tal_small_boxes.py [--data ../shared/data/coco128] [--img-size 640]

Every image of the dataset's annotation files is letterboxed (scale only; the offset does not change which
centres fall inside a box up to a sub-pixel shift, padding is ignored) to ``--img-size``; its boxes are assigned
in one batch against the points of strides 8/16/32 with the head's initial predictions (uniform scores, every
point predicting the box its bias init gives: (reg_max - 1) / 2 = 7.5 strides to each side). Reported per
setting: gts with no candidate point (centre strictly inside the box), gts left without any positive after
top-k and conflict resolution, for the one-to-many (topk 10) and the one-to-one (topk 7, topk2 1) assigner, and
positives per gt for boxes under 8 px on a side vs the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

try:
    import cspdet  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cspdet.det import TaskAlignedAssigner, grid_points


def load_boxes(root: Path, img_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, M, 4) xyxy px at ``img_size`` and (B, M) mask for every annotated image of train + val."""
    per_image: list[list[list[float]]] = []
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        scale = {im["id"]: img_size / max(im["width"], im["height"]) for im in data["images"]}
        boxes: dict[int, list[list[float]]] = {}
        for a in data["annotations"]:
            x, y, w, h = (v * scale[a["image_id"]] for v in a["bbox"])
            boxes.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
        per_image += list(boxes.values())
    m = max(len(b) for b in per_image)
    gt = torch.zeros(len(per_image), m, 4)
    mask = torch.zeros(len(per_image), m, dtype=torch.bool)
    for i, b in enumerate(per_image):
        gt[i, : len(b)] = torch.tensor(b)
        mask[i, : len(b)] = True
    return gt, mask


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/coco128")
    parser.add_argument("--img-size", type=int, default=640)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    gt, mask = load_boxes(args.data, args.img_size)
    b = gt.shape[0]
    strides = (8, 16, 32)
    cells, point_strides = grid_points([(args.img_size // s, args.img_size // s) for s in strides], strides)
    centers = (cells + 0.5) * point_strides[:, None]
    half = 7.5 * point_strides[:, None]
    pred = torch.cat([centers - half, centers + half], -1)[None].expand(b, -1, -1)
    scores = torch.full((b, centers.shape[0], 1), 0.01)
    labels = torch.zeros(gt.shape[:2], dtype=torch.long)
    side = (gt[..., 2:] - gt[..., :2]).amin(-1)
    small = (side < 8) & mask
    print(f"{args.data.name}: {b} images, {int(mask.sum())} boxes at {args.img_size} px, "
          f"{int(small.sum())} with a side < 8 px")
    print(f"{'setting':<34} {'no candidate':>13} {'no positive':>12} {'pos/gt <8px':>12} {'pos/gt rest':>12}")
    for small_box in (None, (8.0, 16.0)):
        for name, kw in (("o2m topk 10", dict(topk=10)), ("o2o topk 7, topk2 1", dict(topk=7, topk2=1))):
            assigner = TaskAlignedAssigner(small_box=small_box, **kw)
            cand = assigner._candidates(centers, gt, mask).any(2)
            out = assigner(scores, pred, centers, gt, labels, mask)
            counts = torch.zeros(gt.shape[:2], dtype=torch.long)
            counts.scatter_add_(1, out.matched_gt, out.fg_mask.long())
            no_cand = int((mask & ~cand).sum())
            no_pos = int((mask & (counts == 0)).sum())
            rest = mask & ~small
            label = f"{'STAL 8->16' if small_box else 'no widening'}, {name}"
            print(f"{label:<34} {no_cand:>13} {no_pos:>12} {counts[small].float().mean():>12.2f} "
                  f"{counts[rest].float().mean():>12.2f}")


if __name__ == "__main__":
    main()
