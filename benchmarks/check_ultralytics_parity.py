"""Output parity of converted Ultralytics checkpoints against Ultralytics itself, for every size of YOLOv8, YOLO11 and
YOLO26 (15 models), on real coco128 images.

Runs in a benchmark venv that has Ultralytics (AGPL; cspdet never imports it) and sees this checkout's cspdet::

    python3 -m venv /work/benchvenv && /work/benchvenv/bin/pip install torch torchvision ultralytics
    PYTHONPATH=. /work/benchvenv/bin/python benchmarks/check_ultralytics_parity.py            # all 15
    PYTHONPATH=. /work/benchvenv/bin/python benchmarks/check_ultralytics_parity.py --models yolo26n --images 2

Per model: Ultralytics builds it from its yaml with a fixed seed (random init; nothing is downloaded: offline
settings in a private config dir), BatchNorm statistics and affine terms are randomised and the class biases spread
(deterministically, so that random weights give real detections above conf), and the model is saved the way
Ultralytics saves it (``YOLO.save``: ``{'model': deepcopy(model).half(), 'ema': None, 'date', 'version', ...}``).
cspdet converts that file (``convert_ultralytics``: restricted reader, no Ultralytics code) and both run, in fp32,
on the same letterboxed images (Ultralytics' ``LetterBox``; RGB 0..1 for Ultralytics, 0..255 for cspdet):

* raw head outputs: box and class maps of every branch (YOLO26: one-to-many and one-to-one), max abs diff;
* decoded predictions (boxes in pixels, class probabilities) of the one-to-many branch, max abs diff;
* detections after each framework's own post-processing, same conf / IoU / max_det: Ultralytics'
  ``non_max_suppression`` vs cspdet's class-aware NMS (every model), and for YOLO26 Ultralytics' end-to-end top-k
  (its ``Detect.postprocess`` + the conf filter of its predictor) vs cspdet's NMS-free top-k. Agreement: the same
  number of detections, and each cspdet detection paired one to one with an Ultralytics detection of the same class,
  score within 1e-4 and box coordinates within ``--box-tol`` pixels (tied scores may come in either order).

Writes a CSV (default benchmarks/results/ultralytics_parity.csv) with the command and date in its last columns, and
prints a Markdown table for the README. Exit code 1 when any model is outside the tolerances.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

# Offline before Ultralytics is imported: no hub, no asset or font downloads, settings in a private folder.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultra_cfg_"))

import cv2  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS = [f"{fam}{s}" for fam in ("yolov8", "yolo11", "yolo26") for s in "nsmlx"]


def randomize_bn(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and affine terms (deterministic), so that parity is not trivially about zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)


def spread_head(model: torch.nn.Module, images: list[torch.Tensor], conf: float, per_image: int = 20) -> None:
    """Give the final box / class convs a trained model's spread on these images, so that real detections pass
    ``conf`` (deterministic). Random init gives every class nearly the same logit at every point (the features'
    mean dominates), so a threshold would cut through thousands of points tied up to float noise and NMS would keep
    whichever rounding puts first. Each output channel is standardised over the images' points (box outputs std
    1.5, class logits std 2), then one class-bias shift per branch puts its ``per_image x images``-th best logit
    on ``logit(conf)``. This multiplies the head's outputs (and any float difference in the features) by the
    channel gains, so raw parity is measured before it."""
    with torch.no_grad():
        detect = model.model[-1]
        model.eval()

        def per_level() -> dict[tuple[str, str], list[torch.Tensor]]:
            """(branch, boxes | scores) -> per level (channels, points) raw outputs over all images (one pass)."""
            per: dict[tuple[str, str], list[list[torch.Tensor]]] = {}
            for x in images:
                out = model(x)[1]
                for branch, raw in (out.items() if "one2many" in out else [("one2many", out)]):
                    sizes = [f.shape[-2] * f.shape[-1] for f in raw["feats"]]
                    for key in ("boxes", "scores"):
                        for i, part in enumerate(raw[key][0].split(sizes, -1)):
                            per.setdefault((branch, key), [[] for _ in sizes])[i].append(part)
            return {k: [torch.cat(p, -1) for p in v] for k, v in per.items()}

        # Random init gives every class nearly the same logit everywhere (the features' mean dominates), so a
        # threshold would cut through thousands of points tied up to float noise: standardise each output channel
        # over these images' points (class logits std 2, box outputs std 1.5), then shift the class biases.
        heads = {("one2many", "boxes"): "cv2", ("one2many", "scores"): "cv3", ("one2one", "boxes"): "one2one_cv2",
                 ("one2one", "scores"): "one2one_cv3"}
        for (branch, key), levels in per_level().items():
            for level, values in zip(getattr(detect, heads[(branch, key)]), levels):
                conv = level[-1]
                gain = (1.5 if key == "boxes" else 2.0) / values.std(-1).clamp_min(1e-12)
                conv.weight.mul_(gain[:, None, None, None])
                conv.bias.copy_((conv.bias - values.mean(-1)) * gain)
        target = math.log(conf / (1 - conf))
        for (branch, key), levels in per_level().items():
            if key == "scores":
                kth = torch.cat(levels, -1).flatten().topk(per_image * len(images)).values[-1].item()
                for level in getattr(detect, heads[(branch, key)]):
                    level[-1].bias.add_(target - kth)


def load_images(folder: Path, n: int, imgsz: int) -> list[torch.Tensor]:
    """The first n coco128 images as (1, 3, H, W) float RGB 0..1, letterboxed by Ultralytics' ``LetterBox`` as its
    predictor does (long side ``imgsz``, padded to a multiple of 32 only: ``auto=True``). A square letterbox would
    add wide uniform pad bands, where random weights give rows of points with the same score up to float noise,
    so which of them NMS keeps would depend on rounding, not on the implementation."""
    from ultralytics.data.augment import LetterBox

    files = sorted(p for p in folder.rglob("*.jpg"))[:n]
    if len(files) < n:
        raise SystemExit(f"{folder}: only {len(files)} images")
    letterbox = LetterBox((imgsz, imgsz), auto=True, stride=32)
    return [torch.from_numpy(letterbox(image=cv2.imread(str(f)))[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
            for f in files]


def match(ours: dict, theirs: torch.Tensor, box_tol: float, iou: float) -> dict:
    """Pair cspdet detections (boxes, scores, labels) with Ultralytics' (K, 6) [x1, y1, x2, y2, score, cls] one to
    one: same class, score within 1e-4, box within ``box_tol`` px (greedy in decreasing score).

    A detection left unpaired is a *near-tie swap* when the other framework kept, instead, a detection of the same
    class that overlaps it by more than the NMS ``iou`` with a score within 1e-4: the two were one group of
    near-tied candidates (score gaps below the frameworks' float differences, e.g. a column of points at the
    image border that random weights score alike), and the two NMS runs, each exact, met them in a different
    order. Any other unpaired detection is ``unexplained``."""
    from torchvision.ops import box_iou

    a_boxes, a_scores, a_labels = ours["boxes"], ours["scores"], ours["labels"].long()
    b_boxes, b_scores, b_labels = theirs[:, :4], theirs[:, 4], theirs[:, 5].long()
    box_diff = (a_boxes[:, None] - b_boxes[None]).abs().amax(-1) if len(a_boxes) and len(b_boxes) else \
        torch.zeros(len(a_boxes), len(b_boxes))
    same = (a_labels[:, None] == b_labels[None]) & ((a_scores[:, None] - b_scores[None]).abs() <= 1e-4)
    ok = same & (box_diff <= box_tol)
    used = torch.zeros(len(b_boxes), dtype=torch.bool)
    paired = torch.zeros(len(a_boxes), dtype=torch.bool)
    box = score = 0.0
    for i in a_scores.argsort(descending=True).tolist():
        cand = (ok[i] & ~used).nonzero().flatten()
        if len(cand):
            j = cand[box_diff[i, cand].argmin()].item()
            used[j] = paired[i] = True
            box = max(box, box_diff[i, j].item())
            score = max(score, (a_scores[i] - b_scores[j]).abs().item())
    group = same & (box_iou(a_boxes, b_boxes) > iou) if len(a_boxes) and len(b_boxes) else same
    swaps = int((~paired & group.any(1)).sum()) + int((~used & group.any(0)).sum())
    unexplained = int((~paired).sum() + (~used).sum()) - swaps
    return dict(n_ours=len(a_scores), n_theirs=len(b_scores), matched=int(paired.sum()), swaps=swaps,
                unexplained=unexplained, box=box, score=score)


def to_cspdet_layout(y: torch.Tensor, xyxy: bool = False) -> torch.Tensor:
    """Ultralytics' decoded (B, 4 + C, A) [cx, cy, w, h | x1, y1, x2, y2, probs] -> cspdet's (B, A, 5 + C)
    [cx, cy, w, h, 1, probs], to run cspdet's post-processing on Ultralytics' own predictions."""
    from torchvision.ops import box_convert

    y = y.transpose(1, 2)
    boxes = box_convert(y[..., :4], "xyxy", "cxcywh") if xyxy else y[..., :4]
    return torch.cat([boxes, torch.ones_like(boxes[..., :1]), y[..., 4:]], -1)


def pair(path: Path):
    """(cspdet detector converted from ``path``, Ultralytics' model loaded from it in fp32, its checkpoint)."""
    from cspdet.models import Detector, DetectorSpec
    from cspdet.models.ultralytics_weights import convert_ultralytics

    ckpt = convert_ultralytics(path)
    ours = Detector.from_spec(DetectorSpec.from_dict(ckpt["spec"])).eval()
    ours.load_state_dict(ckpt["model"])
    # the reference side, in the benchmark venv only: Ultralytics unpickling the file this script just saved with it
    ref = torch.load(path, map_location="cpu", weights_only=False)["model"].float().eval()  # the same fp16 weights
    return ours, ref, ckpt


def raw_diffs(ours, ref, x: torch.Tensor) -> tuple[float, float, float]:
    """Max abs diff of the raw head outputs (one-to-many, one-to-one) and of the decoded one-to-many predictions."""
    detect = ref.model[-1]
    e2e = getattr(detect, "one2one_cv2", None) is not None
    if e2e:
        detect.end2end = False
    y, preds = ref(x)
    o2m = preds["one2many"] if e2e else preds
    feats = ours.neck(ours.backbone(x * 255))
    box, cls = ours.head._run(ours.head.levels, feats)
    raw_o2m = max((box - o2m["boxes"].transpose(1, 2)).abs().max().item(),
                  (cls - o2m["scores"].transpose(1, 2)).abs().max().item())
    raw_o2o = 0.0
    if e2e:
        obox, ocls = ours.head._run(ours.head.o2o_levels, feats)
        raw_o2o = max((obox - preds["one2one"]["boxes"].transpose(1, 2)).abs().max().item(),
                      (ocls - preds["one2one"]["scores"].transpose(1, 2)).abs().max().item())
    ours.nms_free = False
    dec = ours(x * 255)  # (B, A, 5 + C) cx cy w h, obj = 1, probabilities
    decoded = max((dec[..., :4] - y[:, :4].transpose(1, 2)).abs().max().item(),
                  (dec[..., 5:] - y[:, 4:].transpose(1, 2)).abs().max().item())
    return raw_o2m, raw_o2o, decoded


def run_one(name: str, images: list[torch.Tensor], args: argparse.Namespace, workdir: Path) -> dict:
    from ultralytics import YOLO, __version__
    from ultralytics.utils.nms import non_max_suppression

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    yolo = YOLO(f"{name}.yaml")
    randomize_bn(yolo.model, args.seed)
    path = workdir / f"{name}.pt"
    yolo.save(path)  # Ultralytics' own checkpoint layout (fp16 module tree under 'model')
    ours, ref, ckpt = pair(path)
    e2e = getattr(ref.model[-1], "one2one_cv2", None) is not None
    raw_o2m = raw_o2o = decoded = 0.0
    with torch.no_grad():
        for x in images:
            a, b, c = raw_diffs(ours, ref, x)
            raw_o2m, raw_o2o, decoded = max(raw_o2m, a), max(raw_o2o, b), max(decoded, c)

    # detections: the same network with a spread head (see spread_head), saved and converted again
    spread_head(yolo.model, images, args.conf)
    yolo.save(path)
    ours, ref, _ = pair(path)
    detect = ref.model[-1]
    spread_raw = 0.0
    nms_rows, topk_rows, same_rows = [], [], []
    with torch.no_grad():
        for x in images:
            spread_raw = max(spread_raw, *raw_diffs(ours, ref, x)[:2])
            if e2e:
                detect.end2end = False
            y, _ = ref(x)
            ours.nms_free = False
            theirs = non_max_suppression(y, args.conf, args.iou, max_det=args.max_det)  # each framework's own NMS
            mine = ours.head.postprocess(ours(x * 255), args.conf, args.iou, args.max_det)
            nms_rows += [match(a, b, args.box_tol, args.iou) for a, b in zip(mine, theirs)]
            # the post-processing alone: cspdet's NMS on Ultralytics' own decoded predictions
            same = ours.head.postprocess(to_cspdet_layout(y), args.conf, args.iou, args.max_det)
            same_rows += [match(a, b, args.box_tol, args.iou) for a, b in zip(same, theirs)]
            if e2e:  # NMS-free top-k: Ultralytics' end-to-end head output + its predictor's conf filter
                detect.end2end = True
                y2, preds2 = ref(x)
                theirs = non_max_suppression(y2, args.conf, args.iou, max_det=args.max_det, end2end=True)
                ours.nms_free = True
                mine = ours.head.postprocess(ours(x * 255), args.conf, args.iou, args.max_det)
                topk_rows += [match(a, b, args.box_tol, args.iou) for a, b in zip(mine, theirs)]
                decoded_o2o = detect._inference(preds2["one2one"])  # xyxy + probs, before its top-k
                same = ours.head.postprocess(to_cspdet_layout(decoded_o2o, xyxy=True), args.conf, args.iou,
                                             args.max_det)
                same_rows += [match(a, b, args.box_tol, args.iou) for a, b in zip(same, theirs)]

    def summary(rows: list[dict]) -> dict:
        if not rows:
            return dict(dets="", agree="", swaps="", unexplained="", box="", score="")
        return dict(dets=f"{sum(r['n_theirs'] for r in rows)}/{sum(r['n_ours'] for r in rows)}",
                    agree=all(r["matched"] == r["n_ours"] == r["n_theirs"] for r in rows),
                    swaps=sum(r["swaps"] for r in rows), unexplained=sum(r["unexplained"] for r in rows),
                    box=max(r["box"] for r in rows), score=max(r["score"] for r in rows))

    nms, topk, same = summary(nms_rows), summary(topk_rows), summary(same_rows)
    ok = (raw_o2m <= 1e-4 and raw_o2o <= 1e-4 and same["agree"] is True and nms["unexplained"] == 0
          and topk["unexplained"] in (0, ""))
    return {
        "model": name, "cspdet_preset": ckpt["meta"]["preset"],
        "params": sum(p.numel() for p in ref.parameters()), "imgsz": max(max(x.shape[-2:]) for x in images),
        "images": len(images),
        "raw_o2m_max_abs": raw_o2m, "raw_o2o_max_abs": raw_o2o if e2e else "", "decoded_max_abs": decoded,
        "spread_head_raw_max_abs": spread_raw,
        "nms_dets_ultralytics_cspdet": nms["dets"], "nms_agree": nms["agree"], "nms_near_tie_swaps": nms["swaps"],
        "nms_unexplained": nms["unexplained"], "nms_box_max_abs": nms["box"], "nms_score_max_abs": nms["score"],
        "topk_dets_ultralytics_cspdet": topk["dets"], "topk_agree": topk["agree"], "topk_near_tie_swaps": topk["swaps"],
        "topk_unexplained": topk["unexplained"], "topk_box_max_abs": topk["box"], "topk_score_max_abs": topk["score"],
        "postprocess_same_input_dets": same["dets"], "postprocess_same_input_agree": same["agree"], "pass": ok,
        "seconds": round(time.perf_counter() - t0, 1), "ultralytics": __version__, "torch": torch.__version__,
    }


def fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.1e}" if v else "0"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "coco128"),
                        help="coco128 folder (its images/)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--big", default="", help="sizes run with --imgsz-big / --images-big, e.g. mlx")
    parser.add_argument("--imgsz-big", type=int, default=None, help="input size of the --big sizes")
    parser.add_argument("--images-big", type=int, default=None, help="images of the --big sizes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("--box-tol", type=float, default=1e-3, help="box coordinate tolerance in pixels")
    parser.add_argument("--csv", default=str(REPO / "benchmarks" / "results" / "ultralytics_parity.csv"))
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    command = "PYTHONPATH=. python " + " ".join(shlex.quote(a) for a in ["benchmarks/check_ultralytics_parity.py",
                                                                        *(sys.argv[1:] if argv is None else argv)])
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    folder = Path(args.data) / "images"
    cache: dict[tuple[int, int], list[torch.Tensor]] = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="parity_") as tmp:
        for name in args.models:
            big = name[-1] in args.big
            size = args.imgsz_big if big and args.imgsz_big else args.imgsz
            count = args.images_big if big and args.images_big else args.images
            if (size, count) not in cache:
                cache[(size, count)] = load_images(folder, count, size)
            row = run_one(name, cache[(size, count)], args, Path(tmp))
            row.update(command=command, date=date)
            rows.append(row)
            print(" ".join(f"{k}={fmt(v)}" for k, v in row.items() if k not in ("command", "date")), flush=True)
            (Path(tmp) / f"{name}.pt").unlink(missing_ok=True)
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".csv.tmp")
    with open(tmp_out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp_out, out)
    print(f"\nwrote {out}\n")
    print("| model | cspdet preset | params | input x images | raw max abs diff (o2m / o2o) | NMS: dets (Ultralytics / "
          "cspdet), paired | NMS-free top-k: dets, paired | post-processing on the same predictions |")
    print("|---|---|---:|---|---|---|---|---|")

    def agreement(r: dict, kind: str) -> str:
        if r[f"{kind}_agree"] == "":
            return "-"
        if r[f"{kind}_agree"]:
            return f"{r[f'{kind}_dets_ultralytics_cspdet']}, all"
        return (f"{r[f'{kind}_dets_ultralytics_cspdet']}, all but {r[f'{kind}_near_tie_swaps']} near-tie swaps"
                + (f", {r[f'{kind}_unexplained']} UNEXPLAINED" if r[f"{kind}_unexplained"] else ""))

    for r in rows:
        raw = fmt(r["raw_o2m_max_abs"]) + (f" / {fmt(r['raw_o2o_max_abs'])}" if r["raw_o2o_max_abs"] != "" else "")
        same = f"{r['postprocess_same_input_dets']}, {'identical' if r['postprocess_same_input_agree'] else 'DIFFER'}"
        print(f"| {r['model']} | {r['cspdet_preset']} | {r['params']:,} | {r['imgsz']} x {r['images']} | {raw} | "
              f"{agreement(r, 'nms')} | {agreement(r, 'topk')} | {same} |")
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
