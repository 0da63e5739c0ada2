"""Trained weights, not only random ones: train YOLOv8n with Ultralytics on raccoon, convert its ``best.pt`` with
cspdet, and compare the pycocotools mAP of Ultralytics' own predictions (its validator's ``save_json``) with the
mAP of cspdet's predictions (``cspdet val``'s evaluator) on the same 40 val images, same conf / IoU / max_det.

Runs in the benchmark venv (Ultralytics installed there only; cspdet importable)::

    PYTHONPATH=. /work/benchvenv/bin/python benchmarks/check_ultralytics_trained.py --epochs 10

Rows (all scored by the same pycocotools COCOeval against raccoon's COCO annotations):

* ``ultralytics_val``: Ultralytics' validator on its best.pt (``save_json=True``; its defaults: rectangular batches,
  batch 1, centred letterbox, area-interpolated downscaling), its predictions.json scored here;
* ``cspdet_val``: cspdet's evaluator on the converted checkpoint (cspdet's letterbox: square, top-left, bilinear);
* ``cspdet_on_ultralytics_inputs``: the converted cspdet model and cspdet's post-processing on the very input
  tensors of Ultralytics' validator (its dataloader), boxes mapped back as Ultralytics maps them -- the difference
  to ``ultralytics_val`` is the model + post-processing alone, the rest is preprocessing;
* ``cspdet_on_ultralytics_inputs_rounded``: the same detections rounded as Ultralytics' save_json rounds them
  (scores to 5 decimals, boxes to 3), which on a weak model makes groups of equal scores.

Appends the rows (with command and date) to benchmarks/results/ultralytics_parity_trained.csv.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultra_cfg_"))

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
RACCOON = REPO.parent / "shared" / "data" / "raccoon"


def score(results: list[dict]) -> tuple[float, float]:
    from cspdet.engine.coco_metrics import coco_evaluate, load_coco_gt

    gt = load_coco_gt(RACCOON / "annotations" / "instances_val.json")
    stats = coco_evaluate(gt, results).stats
    return float(stats["AP"]), float(stats["AP50"])


def gt_maps() -> tuple[dict[str, int], list[int]]:
    ann = json.loads((RACCOON / "annotations" / "instances_val.json").read_text())
    return {Path(im["file_name"]).stem: im["id"] for im in ann["images"]}, sorted(c["id"] for c in ann["categories"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conf", type=float, default=0.001)
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("--out", default=str(REPO.parent / "bench" / "ultralytics_trained"))
    parser.add_argument("--csv", default=str(REPO / "benchmarks" / "results" / "ultralytics_parity_trained.csv"))
    args = parser.parse_args()
    from bench_learning import write_ultralytics_data  # raccoon as YOLO txt + data.yaml (cspdet's converter)
    from ultralytics import YOLO, __version__
    from ultralytics.utils.ops import scale_boxes

    from cspdet.config import load_config
    from cspdet.runtime.checkpoint import save_checkpoint
    from cspdet.engine.evaluator import COCOEvaluator, load_detector_for_eval
    from cspdet.models import Detector, DetectorSpec
    from cspdet.models.ultralytics_weights import convert_ultralytics

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_ultralytics_data(out)
    data = out / "raccoon_yolo" / "data.yaml"
    run = out / "runs" / f"yolov8n_e{args.epochs}_s{args.seed}"
    best = run / "weights" / "best.pt"
    train_s = None
    if not best.is_file():
        tic = time.perf_counter()
        YOLO("yolov8n.yaml").train(data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                                   seed=args.seed, deterministic=True, workers=0, device="cpu", pretrained=False,
                                   amp=False, plots=False, project=str(run.parent), name=run.name, exist_ok=True,
                                   verbose=False)
        train_s = time.perf_counter() - tic
    ids, cats = gt_maps()
    rows = []

    # 1. Ultralytics' validator with save_json, scored here
    validator = YOLO(str(best)).val(data=str(data), imgsz=args.imgsz, batch=1, conf=args.conf, iou=args.iou,
                                    max_det=args.max_det, save_json=True, plots=False, device="cpu",
                                    project=str(out / "val"), name="ultralytics", exist_ok=True, verbose=False)
    pred_json = Path(validator.save_dir) / "predictions.json"
    theirs = [dict(d, image_id=ids[str(d["image_id"])], category_id=cats[d["category_id"] - 1])
              for d in json.loads(pred_json.read_text())]
    rows.append(("ultralytics_val", *score(theirs), len(theirs)))

    # 2. cspdet's evaluator on the converted checkpoint
    ckpt = convert_ultralytics(best)
    converted = out / "yolov8n_raccoon_cspdet.pt"
    save_checkpoint(ckpt, converted)
    cfg = load_config(None, [f"data.dataset={REPO / 'datasets' / 'raccoon.yaml'}", "data.workers=0",
                             f"eval.img_size=[{args.imgsz},{args.imgsz}]", f"eval.conf={args.conf}",
                             f"eval.iou={args.iou}", f"eval.max_det={args.max_det}"])
    evaluator = COCOEvaluator.from_config(cfg)
    model = load_detector_for_eval(str(converted), cfg, evaluator.class_names)
    stats = evaluator.evaluate(model, plots=False).stats
    rows.append(("cspdet_val", float(stats["AP"]), float(stats["AP50"]), ""))

    # 3. the converted model on Ultralytics' own input tensors, cspdet's post-processing
    ours = Detector.from_spec(DetectorSpec.from_dict(ckpt["spec"])).eval()
    ours.load_state_dict(ckpt["model"])
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    cfg_u = get_cfg(overrides=dict(imgsz=args.imgsz, batch=1, rect=True, workers=0, task="detect", mode="val"))
    info = check_det_dataset(str(data))
    dataset = build_yolo_dataset(cfg_u, info["val"], 1, info, mode="val", stride=32)
    mine = []
    with torch.no_grad():
        for batch in build_dataloader(dataset, 1, 0, shuffle=False):
            x = batch["img"].float()  # uint8 RGB 0..255, letterboxed by Ultralytics
            det = ours.head.postprocess(ours(x), args.conf, args.iou, args.max_det, multi_label=True)[0]
            boxes = scale_boxes(x.shape[2:], det["boxes"].clone(), batch["ori_shape"][0],
                                ratio_pad=batch["ratio_pad"][0])
            stem = Path(batch["im_file"][0]).stem
            for (x1, y1, x2, y2), s, c in zip(boxes.tolist(), det["scores"].tolist(), det["labels"].tolist()):
                mine.append({"image_id": ids[stem], "category_id": cats[int(c)], "bbox": [x1, y1, x2 - x1, y2 - y1],
                             "score": s})
    rows.append(("cspdet_on_ultralytics_inputs", *score(mine), len(mine)))
    # Ultralytics' save_json rounds scores to 5 decimals and boxes to 3: on weak models whole groups of scores
    # become equal, and COCOeval's order among equal scores moves AP; the same rounding here isolates that.
    rounded = [dict(d, bbox=[round(v, 3) for v in d["bbox"]], score=round(d["score"], 5)) for d in mine]
    rows.append(("cspdet_on_ultralytics_inputs_rounded", *score(rounded), len(rounded)))

    command = "PYTHONPATH=. python benchmarks/check_ultralytics_trained.py " + " ".join(map(shlex.quote,
                                                                                        sys.argv[1:]))
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    path = Path(args.csv)
    new = not path.is_file()
    with open(path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(["row", "AP", "AP50", "detections", "epochs", "imgsz", "conf", "iou", "max_det",
                             "train_s", "weights", "ultralytics", "command", "date"])
        for name, ap, ap50, n in rows:
            writer.writerow([name, f"{ap:.4f}", f"{ap50:.4f}", n, args.epochs, args.imgsz, args.conf, args.iou,
                             args.max_det, "" if train_s is None else round(train_s), str(best), __version__,
                             command, date])
    for name, ap, ap50, n in rows:
        print(f"{name:32s} AP {ap:.4f}  AP50 {ap50:.4f}  detections {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
