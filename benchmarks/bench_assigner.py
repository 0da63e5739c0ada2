"""Time SimOTA and task-aligned label assignment (and the whole losses) for a training batch: by default 8 images
at 640x640.

    python benchmarks/bench_assigner.py [--threads 1] [--batch 8] [--img-size 640] [--boxes 10] [--repeats 20]

Issue 4 asks for the assigner's cost per batch of 8 at 640 with ~10 boxes per image. The inputs are synthetic
but shaped like a YOLOX-s training step: 8400 prediction points (strides 8/16/32), 80 classes, random class
and objectness logits, predicted boxes jittered around the grid points, and per image a random number of gt
boxes around ``--boxes`` (padded to the batch maximum with a mask, as the data loader delivers them).

Reported (median and p90 over ``--repeats`` runs, ms per batch):

- ``assigner``: :class:`cspdet.det.SimOTAAssigner` on the whole batch (no Python loop over images, gts or
  points);
- ``assigner, per-image calls``: the same assigner called once per image (B = 1), for comparison with a
  loop-over-images implementation;
- ``loss forward``: :class:`cspdet.det.SimOTALoss` (assignment + IoU / objectness / classification / L1);
- ``TAL ...``: :class:`cspdet.det.TaskAlignedAssigner` on the same batch (issue 11; class probabilities =
  sigmoid of the same class logits, the same predicted boxes): the one-to-many setting (topk 10, alpha 0.5,
  beta 6, CIoU, small-box widening), the same per image, the one-to-one setting (topk 7, topk2 1), and
  :class:`cspdet.det.TaskAlignedLoss` (assignment + CIoU / DFL with 16 bins / BCE; random bin logits).

The machine is shared and noisy: compare numbers measured in one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

try:
    import cspdet  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torchvision.ops import box_convert

from timing import time_ms  # benchmarks/timing.py
from cspdet.det import (SimOTAAssigner, SimOTALoss, Targets, TaskAlignedAssigner, TaskAlignedLoss, decode_boxes,
                        grid_points)
from cspdet.det.dfl import bbox2dist


def synthetic_batch(batch: int, img_size: int, boxes: int, num_classes: int, seed: int = 0) -> dict:
    """Head outputs and padded targets for one batch (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    strides = (8, 16, 32)
    points, point_strides = grid_points([(img_size // s, img_size // s) for s in strides], strides)
    a = points.shape[0]
    reg = torch.cat([torch.rand(batch, a, 2, generator=g), torch.randn(batch, a, 2, generator=g) * 0.5 + 1.0], -1)
    pred_boxes = box_convert(decode_boxes(reg, points, point_strides), "cxcywh", "xyxy")
    cls = torch.randn(batch, a, num_classes, generator=g) - 4.0
    obj = torch.randn(batch, a, generator=g) - 4.0
    counts = torch.randint(max(1, boxes - 3), boxes + 4, (batch,), generator=g)
    m = int(counts.max())
    xy = torch.rand(batch, m, 2, generator=g) * img_size * 0.8
    wh = torch.rand(batch, m, 2, generator=g) * img_size * 0.3 + 8
    gt = torch.cat([xy, (xy + wh).clamp(max=img_size)], -1)
    mask = torch.arange(m)[None] < counts[:, None]
    labels = torch.randint(0, num_classes, (batch, m), generator=g)
    targets = Targets(gt * mask[..., None], labels * mask, mask)
    return dict(reg=reg, pred_boxes=pred_boxes, cls=cls, obj=obj, points=points, strides=point_strides,
                gt=gt * mask[..., None], labels=labels, mask=mask, targets=targets)



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=640)
    parser.add_argument("--boxes", type=int, default=10, help="mean gt boxes per image (uniform +-3)")
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    d = synthetic_batch(args.batch, args.img_size, args.boxes, args.classes)
    centers = (d["points"] + 0.5) * d["strides"][:, None]
    assigner = SimOTAAssigner()
    loss = SimOTALoss(args.classes, assigner=assigner)

    def batched():
        return assigner(d["cls"], d["obj"], d["pred_boxes"], centers, d["strides"], d["gt"], d["labels"], d["mask"])

    def per_image():
        return [assigner(d["cls"][i : i + 1], d["obj"][i : i + 1], d["pred_boxes"][i : i + 1], centers, d["strides"],
                         d["gt"][i : i + 1], d["labels"][i : i + 1], d["mask"][i : i + 1]) for i in range(args.batch)]

    def loss_forward():
        with torch.no_grad():
            return loss(d["cls"], d["obj"], d["reg"], d["pred_boxes"], d["points"], d["strides"], d["targets"],
                        use_l1=True)

    # Task-aligned assignment on the same batch. The TAL loss decodes its boxes from DFL distances: encode the
    # same predicted boxes as distances and give each side a peaked bin distribution around them.
    tal = TaskAlignedAssigner()
    tal_o2o = TaskAlignedAssigner(topk=7, topk2=1)
    scores = d["cls"].sigmoid()
    reg_max = 16
    anchors = d["points"] + 0.5
    dist = bbox2dist(anchors, d["pred_boxes"] / d["strides"][:, None], reg_max)
    bins = torch.arange(reg_max, dtype=torch.float32)
    box_logits = -(dist[..., None] - bins).abs().flatten(2) * 2.0  # (B, A, 4 * reg_max)
    tal_loss = TaskAlignedLoss(args.classes, reg_max, tal)

    def tal_batched():
        return tal(scores, d["pred_boxes"], centers, d["gt"], d["labels"], d["mask"])

    def tal_per_image():
        return [tal(scores[i : i + 1], d["pred_boxes"][i : i + 1], centers, d["gt"][i : i + 1],
                    d["labels"][i : i + 1], d["mask"][i : i + 1]) for i in range(args.batch)]

    def tal_one2one():
        return tal_o2o(scores, d["pred_boxes"], centers, d["gt"], d["labels"], d["mask"])

    def tal_loss_forward():
        with torch.no_grad():
            return tal_loss(box_logits, dist, d["cls"], anchors, d["strides"], d["targets"])

    out = batched()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch} at "
          f"{args.img_size}x{args.img_size} ({d['points'].shape[0]} points), {args.classes} classes, "
          f"{d['mask'].sum(1).tolist()} gt boxes per image, {args.repeats} repeats")
    print(f"foreground points per image: SimOTA {out.num_fg.tolist()}, TAL {tal_batched().num_fg.tolist()}, "
          f"TAL one-to-one {tal_one2one().num_fg.tolist()}")
    print(f"{'':<30} {'median ms/batch':>16} {'p90':>8}")
    cases = (("assigner", batched), ("assigner, per-image calls", per_image), ("loss forward", loss_forward),
             ("TAL assigner", tal_batched), ("TAL assigner, per-image calls", tal_per_image),
             ("TAL one-to-one assigner", tal_one2one), ("TAL loss forward", tal_loss_forward))
    for name, fn in cases:
        times = time_ms(fn, args.repeats)
        p90 = sorted(times)[int(0.9 * (len(times) - 1))]
        print(f"{name:<30} {statistics.median(times):>16.2f} {p90:>8.2f}")


if __name__ == "__main__":
    main()
