"""Learning benchmark: how well a recipe learns from scratch on a small real dataset, in the same run, on this CPU.

    python benchmarks/bench_learning.py                                  # every row, seeds 0 1 2 where asked
    python benchmarks/bench_learning.py --rows cspdet_small_scratch ultralytics_yolo26n --seeds 0
    python benchmarks/bench_learning.py --ultralytics-python /path/to/benchvenv/bin/python

Dataset: ``../shared/data/raccoon`` (real photos, 1 class; train 160 -> val 40 images; see its SOURCE.md).
Every row trains from scratch at input 416, batch 16, 30 epochs, on the CPU with 2 threads and no loader workers
(Ultralytics' trainer sets workers=0 on a CPU itself; cspdet's thread rule then gives torch both cores), then its final
``best`` weights are scored by the SAME scorer: cspdet's pycocotools COCOeval on the val json (detections at
conf 0.001, up to 300 per image), so the AP of both frameworks is computed identically. cspdet rows are scored
twice: with the head's default inference (the one-to-one branch, no NMS, for ``csptal_*``) and through the NMS
path (one-to-many branch + NMS); Ultralytics rows with its ``predict`` defaults (YOLO26: its end-to-end head).
Runs go seed by seed, cspdet and Ultralytics interleaved (``run_order``).

Rows:

- ``cspdet_small_scratch``: ``configs/small_scratch.yaml`` (csptal_n, optimizer auto, ...), seeds ``--seeds``;
- ``ultralytics_yolo26n``: Ultralytics YOLO26n from its yaml (no pretrained weights) with its defaults, seeds
  ``--seeds``;
- ``cspdet_yolox_tiny``: cspdet's YOLOX-Tiny with the YOLOX recipe (SGD, ...), seed 0;
- ``ultralytics_yolov8n``: Ultralytics YOLOv8n from its yaml with its defaults, seed 0;
- ``cspdet_yolov8n_layout``: the same YOLOv8n network trained by cspdet with the small_scratch recipe, seed 0.
- ``cspdet_yolo26n_layout``: the YOLO26n network (``yolo26n_layout``: C3k2 + attention, direct regression,
  NMS-free) trained by cspdet with the small_scratch recipe, seed 0.

Ultralytics (AGPL) is never imported by cspdet: its rows run in a separate interpreter (``--ultralytics-python``,
a benchmark venv with ``ultralytics`` installed) through a small script this benchmark writes to a temp file.
Results: one line per run as it finishes, then a table of means +- sd per row; all written to ``--out``
(CSV + Markdown). A run takes minutes; run the benchmark in the background.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

try:
    import cspdet  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cspdet.fileio import atomic_write  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RACCOON = REPO.parent / "shared" / "data" / "raccoon"
ROWS = {
    "cspdet_small_scratch": ("cspdet", dict(config="configs/small_scratch.yaml"), "seeds"),
    "ultralytics_yolo26n": ("ultralytics", dict(model="yolo26n.yaml"), "seeds"),
    "cspdet_yolox_tiny": ("cspdet", dict(config="configs/cspdarknet_tiny_yolo.yaml",
                                          overrides=["model.num_classes=1", "train.no_aug_epochs=3",
                                                     "train.warmup_epochs=2"]), "seed0"),
    "ultralytics_yolov8n": ("ultralytics", dict(model="yolov8n.yaml"), "seed0"),
    "cspdet_yolov8n_layout": ("cspdet", dict(config="configs/small_scratch.yaml",
                                              overrides=["model.name=yolov8n_layout"]), "seed0"),
    "cspdet_yolo26n_layout": ("cspdet", dict(config="configs/small_scratch.yaml",
                                              overrides=["model.name=yolo26n_layout"]), "seed0"),
}
FIELDS = ["row", "seed", "AP", "AP50", "AP_nms", "AP50_nms", "train_s", "s_per_epoch", "epochs", "run_dir"]


def _env(threads: int) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def run_cspdet(row: str, spec: dict, seed: int, args: argparse.Namespace, out: Path) -> dict:
    """Train with tools/train.py in a fresh process (the way a user runs it), then score best.pt."""
    name = f"{row}_s{seed}"
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), spec["config"], *spec.get("overrides", []),
           f"data.dataset={REPO / 'datasets' / 'raccoon.yaml'}", f"train.seed={seed}", f"train.epochs={args.epochs}",
           f"train.batch_size={args.batch}", f"data.img_size=[{args.imgsz},{args.imgsz}]",
           f"eval.img_size=[{args.imgsz},{args.imgsz}]", f"train.output_dir={out / 'runs'}", f"train.name={name}",
           "train.exist_ok=true", "train.device=cpu", "data.workers=0", "--no-progress"]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(args.threads), capture_output=True, text=True, cwd=REPO)
    train_s = time.perf_counter() - tic
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: training failed:\n{proc.stderr[-2000:]}")
    run_dir = out / "runs" / name
    ap, ap50 = score_cspdet(run_dir / "best.pt", args)
    ap_nms, ap50_nms = score_cspdet(run_dir / "best.pt", args, nms_free=False)
    return dict(row=row, seed=seed, AP=ap, AP50=ap50, AP_nms=ap_nms, AP50_nms=ap50_nms, train_s=train_s, s_per_epoch=train_s / args.epochs,
                epochs=args.epochs, run_dir=str(run_dir))


def score_cspdet(weights: Path, args: argparse.Namespace, nms_free: bool | None = None) -> tuple[float, float]:
    """AP / AP50 of ``weights`` on raccoon val: the head's default inference (``nms_free=None``; the one-to-one
    top-k for a head that has it) or, with ``nms_free=False``, the one-to-many branch + NMS."""
    from cspdet.config import load_config
    from cspdet.engine.evaluator import COCOEvaluator, load_detector_for_eval

    cfg = load_config(None, [f"data.dataset={REPO / 'datasets' / 'raccoon.yaml'}", "data.workers=0",
                             f"eval.img_size=[{args.imgsz},{args.imgsz}]"])
    evaluator = COCOEvaluator.from_config(cfg, nms_free=nms_free)
    model = load_detector_for_eval(weights, cfg, evaluator.class_names)
    stats = evaluator.evaluate(model, plots=False).stats
    return float(stats["AP"]), float(stats["AP50"])


ULTRA_SCRIPT = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path
    import torch
    from ultralytics import YOLO
    args = json.loads(sys.argv[1])
    torch.set_num_threads(args["threads"])
    run = Path(args["project"]) / args["name"]
    best, done = run / "weights" / "best.pt", run / "train_time.json"
    if done.is_file() and best.is_file():  # trained by an earlier call whose scoring failed: score it again
        train_s = json.loads(done.read_text())["train_s"]
    else:
        model = YOLO(args["model"])
        tic = time.perf_counter()
        model.train(data=args["data"], epochs=args["epochs"], imgsz=args["imgsz"], batch=args["batch"],
                    seed=args["seed"], deterministic=True, workers=2, device="cpu", pretrained=False, amp=False,
                    plots=False, project=args["project"], name=args["name"], exist_ok=True, verbose=False)
        train_s = time.perf_counter() - tic
        done.write_text(json.dumps({"train_s": train_s}))
    trained = YOLO(str(best))
    dets = {}
    for r in trained.predict(source=args["val_images"], imgsz=args["imgsz"], conf=0.001, iou=0.7, max_det=300,
                             device="cpu", verbose=False, stream=True):
        b = r.boxes
        dets[Path(r.path).name] = [[*map(float, xyxy), float(s), int(c)] for xyxy, s, c in
                                   zip(b.xyxy.tolist(), b.conf.tolist(), b.cls.tolist())]
    print("RESULT " + json.dumps({"train_s": train_s, "dets": dets, "run_dir": str(run)}))
''')


def run_ultralytics(row: str, spec: dict, seed: int, args: argparse.Namespace, out: Path) -> dict:
    data = out / "raccoon_yolo" / "data.yaml"
    name = f"{row}_s{seed}"
    payload = dict(model=spec["model"], data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                   seed=seed, threads=args.threads, project=str(out / "runs"), name=name,
                   val_images=str(RACCOON / "images" / "val"))
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(ULTRA_SCRIPT)
    proc = subprocess.run([args.ultralytics_python, fh.name, json.dumps(payload)], env=_env(args.threads),
                          capture_output=True, text=True, cwd=out)
    os.unlink(fh.name)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{name}: Ultralytics failed:\n{proc.stderr[-3000:]}")
    result = json.loads(line[len("RESULT "):])
    ap, ap50 = score_detections(result["dets"])
    return dict(row=row, seed=seed, AP=ap, AP50=ap50, AP_nms="", AP50_nms="", train_s=result["train_s"],
                s_per_epoch=result["train_s"] / args.epochs, epochs=args.epochs, run_dir=result["run_dir"])


def score_detections(dets: dict[str, list[list[float]]]) -> tuple[float, float]:
    """pycocotools AP / AP50 of xyxy detections keyed by val image file name (class index 0 -> category 1).

    YOLO26's end-to-end head can output inverted boxes (x2 < x1: seen on raccoon, e.g. w = -60 px); they are
    kept, as zero-width boxes that match nothing (false positives, as in Ultralytics' own validator, whose IoU
    of such a box is 0), and counted on stderr.
    """
    from cspdet.engine.coco_metrics import coco_evaluate, load_coco_gt

    gt = load_coco_gt(RACCOON / "annotations" / "instances_val.json")
    ids = {im["file_name"]: im["id"] for im in gt.dataset["images"]}
    cats = sorted(c["id"] for c in gt.dataset["categories"])
    results = [{"image_id": ids[name], "category_id": cats[int(c)],
                "bbox": [x1, y1, max(x2 - x1, 0.0), max(y2 - y1, 0.0)], "score": s}
               for name, boxes in dets.items() for x1, y1, x2, y2, s, c in boxes]
    inverted = sum(x2 < x1 or y2 < y1 for boxes in dets.values() for x1, y1, x2, y2, _, _ in boxes)
    if inverted:
        print(f"  {inverted} of {len(results)} detections are inverted boxes (x2 < x1 or y2 < y1): scored as "
              "zero-width false positives", file=sys.stderr, flush=True)
    stats = coco_evaluate(gt, results).stats
    return float(stats["AP"]), float(stats["AP50"])


def write_ultralytics_data(out: Path) -> None:
    """Ultralytics reads YOLO txt: convert raccoon once with cspdet's converter, data YAML with an absolute path."""
    root = out / "raccoon_yolo"
    if not (root / "data.yaml").is_file():
        subprocess.run([sys.executable, str(REPO / "tools" / "convert_dataset.py"), str(REPO / "datasets" /
                        "raccoon.yaml"), "--to", "yolo", "--out", str(root)], check=True, capture_output=True)
        (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: raccoon\n")


def _csv_text(results: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, FIELDS)
    writer.writeheader()
    writer.writerows(results)
    return buf.getvalue()


def summarise(results: list[dict]) -> str:
    lines = ["| row | seeds | AP (mean +- sd) | AP50 (mean +- sd) | AP, NMS path | AP50, NMS path | train s (mean) "
             "| s / epoch |", "|---|---|---|---|---|---|---|---|"]
    for row in ROWS:
        rs = [r for r in results if r["row"] == row]
        if not rs:
            continue

        def ms(key: str, rs=rs) -> str:
            vals = [float(r[key]) for r in rs if r.get(key) not in (None, "")]  # Ultralytics rows: no NMS column
            if not vals:
                return "-"
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            return f"{statistics.mean(vals):.3f} +- {sd:.3f}"

        lines.append(f"| {row} | {','.join(str(r['seed']) for r in rs)} | {ms('AP')} | {ms('AP50')} | "
                     f"{ms('AP_nms')} | {ms('AP50_nms')} | "
                     f"{statistics.mean(float(r['train_s']) for r in rs):.0f} | "
                     f"{statistics.mean(float(r['s_per_epoch']) for r in rs):.1f} |")
    return "\n".join(lines)


def run_order(rows: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """Seed by seed, the multi-seed rows interleaved (cspdet, Ultralytics, cspdet, ...), single-seed rows last.

    Interleaving means a machine that gets busier or quieter during the hours a benchmark takes affects both
    frameworks alike, and the first seed of the headline comparison is in after two runs, not after four.
    """
    multi = [r for r in rows if ROWS[r][2] == "seeds"]
    single = [r for r in rows if ROWS[r][2] != "seeds"]
    return [(r, s) for s in seeds for r in multi] + [(r, 0) for r in single]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ultralytics-python", default=str(REPO.parent / "benchvenv" / "bin" / "python"),
                        help="interpreter of a benchmark venv with ultralytics installed")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_learning"))
    args = parser.parse_args(argv)
    if not (RACCOON / "annotations" / "instances_val.json").is_file():
        print(f"raccoon not found at {RACCOON}; nothing to do", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    results: list[dict] = []
    if csv_path.is_file():  # resume: runs already done are kept
        with csv_path.open() as fh:
            results = list(csv.DictReader(fh))
    done = {(r["row"], int(r["seed"])) for r in results}
    for row, seed in run_order(args.rows, args.seeds):
        framework, spec, _ = ROWS[row]
        if (row, seed) in done:
            continue
        if framework == "ultralytics":
            write_ultralytics_data(out)
            result = run_ultralytics(row, spec, seed, args, out)
        else:
            result = run_cspdet(row, spec, seed, args, out)
        results.append(result)
        print(f"{row} seed {seed}: AP {result['AP']:.4f} AP50 {result['AP50']:.4f} train {result['train_s']:.0f} s",
              flush=True)
        atomic_write(csv_path, _csv_text(results))
    table = summarise(results)
    atomic_write(out / "results.md", table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
