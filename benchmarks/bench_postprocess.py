"""Time eval-time post-processing: 8400 candidates x 80 classes -> score filter, top-k, batched_nms, max_det.

    python benchmarks/bench_postprocess.py [--threads 2] [--repeats 50] [--batch 1]

The predictions are synthetic but shaped like a trained YOLOX-s output at 640x640 (8400 points on strides
8/16/32): a few dozen objects, each covered by a cluster of points with high objectiveness and jittered
boxes, and a background whose scores spread over 1e-5..1e-2, so that the number of points above
conf 0.001 can be set (YOLOX-s on COCO passes ~2.7k-6.4k of 8400). Three regimes are timed:

- eval-typical: conf 0.001, ~4k candidates;
- eval-worst: conf 0.001, every one of the 8400 points passes (an untrained or over-confident model);
- predict: conf 0.25 (~100-200 candidates).

Reported: median and p90 ms per image of ``cspdet.det.postprocess`` and, for the eval regimes, how that
splits into the score filter / top-k and the NMS itself. Machines are shared and noisy: compare ratios
measured in one run.
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

from torchvision.ops import batched_nms, box_convert

from timing import time_ms  # benchmarks/timing.py
from cspdet.det import postprocess


def synthetic_preds(
    batch: int, num_classes: int = 80, img_size: int = 640, num_objects: int = 40, background_pass: float = 0.45,
    seed: int = 0,
) -> torch.Tensor:
    """(B, 8400, 5 + C) decoded predictions: cx, cy, w, h (px), objectness, class probabilities.

    ``background_pass`` is roughly the fraction of background points whose score (obj x best class prob) is
    at least 0.001.
    """
    g = torch.Generator().manual_seed(seed)
    strides = (8, 16, 32)
    centres = []
    for s in strides:
        n = img_size // s
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        centres.append(torch.stack(((xs + 0.5) * s, (ys + 0.5) * s, torch.full_like(xs, s)), -1).reshape(-1, 3))
    grid = torch.cat(centres).float()  # (A, 3) cx, cy, stride
    a = grid.shape[0]
    out = torch.empty(batch, a, 5 + num_classes)
    for b in range(batch):
        # Background: small boxes around each point, scores log-uniform around the conf threshold.
        wh = grid[:, 2:3] * torch.empty(a, 2).uniform_(1.0, 4.0, generator=g)
        out[b, :, :2] = grid[:, :2] + torch.randn(a, 2, generator=g) * grid[:, 2:3] * 0.3
        out[b, :, 2:4] = wh
        cls = torch.rand(a, num_classes, generator=g) * 0.05
        # log10(score) uniform on [lo, hi] with a fraction `background_pass` of it above -3 (= conf 0.001)
        if background_pass >= 1.0:
            lo, hi = -3.0, -1.5
        else:
            lo = -5.0
            hi = (5.0 * background_pass - 3.0) / (1.0 - background_pass) if background_pass > 0 else -3.0
        score = 10 ** torch.empty(a).uniform_(lo, max(hi, lo + 1e-3), generator=g)
        best = torch.randint(0, num_classes, (a,), generator=g)
        cls[torch.arange(a), best] = 0.5
        out[b, :, 4] = (score / 0.5).clamp(max=1.0)
        out[b, :, 5:] = cls
        # Objects: a box, and every point within 2.5 strides of its centre predicts a jittered copy.
        for _ in range(num_objects):
            w, h = (torch.rand(2, generator=g) * 0.5 * img_size + 8).tolist()
            cx, cy = (torch.rand(2, generator=g) * img_size).tolist()
            label = int(torch.randint(0, num_classes, (1,), generator=g))
            near = ((grid[:, 0] - cx).abs() < 2.5 * grid[:, 2]) & ((grid[:, 1] - cy).abs() < 2.5 * grid[:, 2])
            k = int(near.sum())
            if k == 0:
                continue
            jitter = torch.randn(k, 4, generator=g) * 0.05
            out[b, near, 0] = cx + jitter[:, 0] * w
            out[b, near, 1] = cy + jitter[:, 1] * h
            out[b, near, 2] = w * (1 + jitter[:, 2])
            out[b, near, 3] = h * (1 + jitter[:, 3])
            # a few confident points per object, a long tail of weak ones (as a trained model gives)
            out[b, near, 4] = 10 ** torch.empty(k).uniform_(-3.0, -0.05, generator=g)
            out[b, near, 5:] = torch.rand(k, num_classes, generator=g) * 0.02
            out[b, near, 5 + label] = torch.empty(k).uniform_(0.5, 0.95, generator=g)
    return out



def _split(preds: torch.Tensor, conf: float, iou: float, pre_nms_topk: int, repeats: int) -> tuple[float, float, int]:
    """Median ms of (filter + top-k + box convert) and of batched_nms alone, for the first image."""
    p = preds[0]
    state = {}

    def select():
        cls_prob, labels = p[:, 5:].max(1)
        scores = p[:, 4] * cls_prob
        keep = scores >= conf
        boxes, scores, labels = p[keep, :4], scores[keep], labels[keep]
        if scores.numel() > pre_nms_topk:
            top = scores.topk(pre_nms_topk).indices
            boxes, scores, labels = boxes[top], scores[top], labels[top]
        state["args"] = (box_convert(boxes, "cxcywh", "xyxy"), scores, labels)

    t_select = statistics.median(time_ms(select, repeats, warmup=5))
    boxes, scores, labels = state["args"]
    t_nms = statistics.median(time_ms(lambda: batched_nms(boxes, scores, labels, iou), repeats, warmup=5))
    return t_select, t_nms, int(scores.numel())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--pre-nms-topk", type=int, default=None, help="default: postprocess()'s own default")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    extra = {} if args.pre_nms_topk is None else {"pre_nms_topk": args.pre_nms_topk}
    topk_for_split = args.pre_nms_topk or 10000

    regimes = [
        ("eval-typical", 0.001, 0.65, dict(background_pass=0.45)),
        ("eval-worst", 0.001, 0.65, dict(background_pass=1.0)),
        ("predict", 0.25, 0.45, dict(background_pass=0.45)),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.classes} classes, {args.repeats} repeats")
    print(f"{'regime':<14} {'conf':>6} {'cand/img':>9} {'kept/img':>9} {'median ms/img':>14} {'p90':>7}  "
          f"{'filter+topk':>11} {'nms':>7}")
    for name, conf, iou, kw in regimes:
        preds = synthetic_preds(args.batch, num_classes=args.classes, **kw)
        scores = preds[..., 4] * preds[..., 5:].max(-1).values
        candidates = float((scores >= conf).sum(1).float().mean())
        out = postprocess(preds, conf=conf, iou=iou, max_det=300, **extra)
        kept = sum(len(o["scores"]) for o in out) / args.batch
        times = [t / args.batch for t in time_ms(lambda: postprocess(preds, conf=conf, iou=iou, max_det=300, **extra),
                                                  args.repeats, warmup=5)]
        t_sel, t_nms, _ = _split(preds, conf, iou, topk_for_split, args.repeats)
        p90 = sorted(times)[int(0.9 * (len(times) - 1))]
        print(f"{name:<14} {conf:>6} {candidates:>9.0f} {kept:>9.0f} {statistics.median(times):>14.2f} {p90:>7.2f}  "
              f"{t_sel:>11.2f} {t_nms:>7.2f}")


if __name__ == "__main__":
    main()
