"""Learning benchmark over the panel: how well each recipe learns from scratch on small real datasets, in one run.

    python benchmarks/bench_learning.py                                      # the panel x every row x seeds
    python benchmarks/bench_learning.py --datasets raccoon cards --rows cspdet_small_scratch ultralytics_yolo26n
    python benchmarks/bench_learning.py --datasets coco128 --seeds 0         # crowded / small-object diagnostic
    python benchmarks/bench_learning.py --ultralytics-python /path/to/benchvenv/bin/python

The panel (``../shared/data``, real photos; each SOURCE.md gives licence and attribution; descriptors in
``datasets/``): **raccoon** (1 class, 160 / 40), **cards** (6 fine-grained, overlapping classes, 296 / 67),
**microcontroller** (4 classes, 112 / 30 / 7 test), **thermal** (thermal infrared, 2 classes, 142 / 41 / 20 test,
18 negatives). ``coco128`` (80 classes, crowded scenes, many small objects) is a diagnostic outside the panel mean.

Every run trains from scratch at input 416, batch 16, 30 epochs, on the CPU with 2 threads and no loader workers
(Ultralytics' trainer sets workers=0 on a CPU itself; cspdet's thread rule then gives torch both cores), then its final
``best`` weights are scored by the SAME scorer: cspdet's pycocotools COCOeval on the dataset's val json (and its
test json where it has one), detections at conf 0.001, up to 300 per image, so both frameworks' AP is computed
identically; AP, AP50 and AP small / medium / large are kept. cspdet rows are scored twice: with the head's
default inference (the one-to-one branch, no NMS, for ``csptal_*`` / ``yolo26*``) and through the NMS path
(one-to-many branch + NMS); Ultralytics rows with its ``predict`` defaults (YOLO26: its end-to-end head).

Rows (``ROWS``): ``cspdet_small_scratch`` (``configs/small_scratch.yaml``), Ultralytics ``yolo11n`` and ``yolo26n``
from their yaml (no pretrained weights) with their defaults, on every seed of ``--seeds``; cspdet's candidate
networks for the recipe (``yolov8n_layout``, ``yolo11n_layout``, ``yolo26n_layout`` under the small_scratch recipe)
and the older reference rows (YOLOX-Tiny recipe, Ultralytics YOLOv8n) at seed 0.

Resumable: one CSV row per (dataset, row, seed) as it finishes (``--out``/results.csv, written atomically); a run
already in the CSV is not run again. Runs go dataset by dataset, seed by seed, cspdet and Ultralytics interleaved
(``run_order``), so a machine that gets busier or quieter over the hours affects both frameworks alike. The summary
(``results.md``) has a table per dataset and the panel table: per seed the mean over the four panel datasets, then
mean +- sd over seeds, with training wall time and seconds per epoch beside every AP.

Ultralytics (AGPL) is never imported by cspdet: its rows run in a separate interpreter (``--ultralytics-python``,
a benchmark venv with ``ultralytics`` installed) through a small script this benchmark writes to a temp file.
A run takes minutes; the whole panel takes many hours: run it in the background.
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

try:
    import cspdet  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cspdet.fileio import atomic_write  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
PANEL = ("raccoon", "cards", "microcontroller", "thermal")
DIAGNOSTIC = ("coco128",)
SPLITS = ("val", "test")  # scored where the dataset has them; val decides best.pt in both frameworks
SMALL = "configs/small_scratch.yaml"
ROWS = {  # row -> (framework, how to run it, seeds: "seeds" = every --seeds, "seed0" = seed 0 only)
    "cspdet_small_scratch": ("cspdet", dict(config=SMALL), "seeds"),
    "ultralytics_yolo11n": ("ultralytics", dict(model="yolo11n.yaml"), "seeds"),
    "ultralytics_yolo26n": ("ultralytics", dict(model="yolo26n.yaml"), "seeds"),
    "cspdet_small_scratch_fp32": ("cspdet", dict(config=SMALL, overrides=["train.bf16=false"]), "seed0"),
    "cspdet_yolov8n_layout": ("cspdet", dict(config=SMALL, overrides=["model.name=yolov8n_layout"]), "seed0"),
    "cspdet_yolo11n_layout": ("cspdet", dict(config=SMALL, overrides=["model.name=yolo11n_layout"]), "seed0"),
    "cspdet_yolo26n_layout": ("cspdet", dict(config=SMALL, overrides=["model.name=yolo26n_layout"]), "seed0"),
    # the recipe before the panel: YOLO26's 0.8 -> 0.1 loss mix, NMS-free inference by default
    "cspdet_small_scratch_progloss": ("cspdet", dict(config=SMALL, overrides=[
        "model.head_options={o2m_weight: 0.8, o2m_final: 0.1, nms_free: true}"]), "seed0"),
    # the experiment that changed it: the mix held at 0.5, still NMS-free by default (best.pt chosen by that path)
    "cspdet_small_scratch_mix_const": ("cspdet", dict(config=SMALL, overrides=[
        "model.head_options={o2m_weight: 0.5, o2m_final: 0.5, nms_free: true}"]), "seed0"),
    # experiment: the one-to-one positives chosen by the one-to-many branch's predictions (head option o2o_assign)
    "cspdet_small_scratch_o2o_from_o2m": ("cspdet", dict(config=SMALL, overrides=[
        "model.head_options={tal: {o2m_weight: 0.5, o2m_final: 0.5, nms_free: false, o2o_assign: o2m}}"]), "seed0"),
    "cspdet_yolox_tiny": ("cspdet", dict(config="configs/cspdarknet_tiny_yolo.yaml",
                                          overrides=["train.no_aug_epochs=3", "train.warmup_epochs=2"]), "seed0"),
    "ultralytics_yolov8n": ("ultralytics", dict(model="yolov8n.yaml"), "seed0"),
}
DEFAULT_ROWS = [r for r in ROWS if r not in ("cspdet_yolox_tiny", "ultralytics_yolov8n", "cspdet_small_scratch_progloss",
                                             "cspdet_small_scratch_mix_const", "cspdet_small_scratch_o2o_from_o2m")]
SCORES = ("AP", "AP50", "APs", "APm", "APl")
#: score columns: ``{split}{mode}{stat}``: split "" = val, "test_" = test; mode "" = the model's default inference,
#: "nms_" = the NMS path of a cspdet row, "o2o_" = its NMS-free one-to-one path (both empty for Ultralytics rows).
SCORE_FIELDS = [f"{sp}{mode}{k}" for sp in ("", "test_") for mode in ("", "nms_", "o2o_") for k in SCORES]
FIELDS = ["dataset", "row", "seed", *SCORE_FIELDS, "train_s", "s_per_epoch", "epochs", "threads", "jobs", "run_dir"]


def descriptor(dataset: str) -> Path:
    return REPO / "datasets" / f"{dataset}.yaml"


def annotations(dataset: str, split: str) -> Path:
    return SHARED / dataset / "annotations" / f"instances_{split}.json"


def dataset_splits(dataset: str) -> list[str]:
    return [sp for sp in SPLITS if annotations(dataset, sp).is_file()]


def class_names(dataset: str) -> list[str]:
    cats = json.loads(annotations(dataset, "train").read_text())["categories"]
    return [c["name"] for c in sorted(cats, key=lambda c: c["id"])]


def _env(threads: int) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def _prefix(split: str) -> str:
    return "" if split == "val" else f"{split}_"


def run_cspdet(dataset: str, row: str, spec: dict, seed: int, args: argparse.Namespace, out: Path) -> dict:
    """Train with tools/train.py in a fresh process (the way a user runs it), then score best.pt."""
    name = f"{dataset}_{row}_s{seed}"
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), spec["config"], *spec.get("overrides", []),
           f"data.dataset={descriptor(dataset)}", f"model.num_classes={len(class_names(dataset))}",
           f"train.seed={seed}", f"train.epochs={args.epochs}",
           f"train.batch_size={args.batch}", f"data.img_size=[{args.imgsz},{args.imgsz}]",
           f"eval.img_size=[{args.imgsz},{args.imgsz}]", f"train.output_dir={out / 'runs'}", f"train.name={name}",
           "train.exist_ok=true", "train.device=cpu", "data.workers=0", "--no-progress"]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(args.threads), capture_output=True, text=True, cwd=REPO)
    train_s = time.perf_counter() - tic
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: training failed:\n{proc.stderr[-2000:]}")
    run_dir = out / "runs" / name
    result = dict(dataset=dataset, row=row, seed=seed, train_s=round(train_s, 1),
                  s_per_epoch=round(train_s / args.epochs, 2), epochs=args.epochs, threads=args.threads,
                  run_dir=str(run_dir))
    for split in dataset_splits(dataset):
        for mode, stats in score_cspdet(run_dir / "best.pt", dataset, split, args).items():
            result.update({f"{_prefix(split)}{mode}{k}": round(stats[k], 4) for k in SCORES})
    return result


def score_cspdet(weights: Path, dataset: str, split: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """COCO stats of ``weights`` on one split through each inference path, keyed by column prefix: ``""`` the
    model's default, ``"nms_"`` the one-to-many branch + NMS, ``"o2o_"`` the one-to-one top-k (no NMS) when the head
    has a one-to-one branch."""
    from cspdet.config import load_config
    from cspdet.engine.evaluator import COCOEvaluator, load_detector_for_eval

    cfg = load_config(None, [f"data.dataset={descriptor(dataset)}", "data.workers=0", f"eval.split={split}",
                             f"eval.img_size=[{args.imgsz},{args.imgsz}]"])
    model = None
    scores = {}
    for mode, nms_free in (("", None), ("nms_", False), ("o2o_", True)):
        evaluator = COCOEvaluator.from_config(cfg, nms_free=nms_free)
        model = model or load_detector_for_eval(weights, cfg, evaluator.class_names)
        if nms_free and not getattr(model.head, "one2one", False):
            continue
        stats = evaluator.evaluate(model, plots=False).stats
        scores[mode] = {k: float(stats[k]) for k in SCORES}
    return scores


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
    for split, folder in args["images"].items():
        dets[split] = {}
        for r in trained.predict(source=folder, imgsz=args["imgsz"], conf=0.001, iou=0.7, max_det=300,
                                 device="cpu", verbose=False, stream=True):
            b = r.boxes
            dets[split][Path(r.path).name] = [[*map(float, xyxy), float(s), int(c)] for xyxy, s, c in
                                              zip(b.xyxy.tolist(), b.conf.tolist(), b.cls.tolist())]
    print("RESULT " + json.dumps({"train_s": train_s, "dets": dets, "run_dir": str(run)}))
''')


def run_ultralytics(dataset: str, row: str, spec: dict, seed: int, args: argparse.Namespace, out: Path) -> dict:
    data = write_ultralytics_data(dataset, out)
    name = f"{dataset}_{row}_s{seed}"
    payload = dict(model=spec["model"], data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                   seed=seed, threads=args.threads, project=str(out / "runs"), name=name,
                   images={sp: str(SHARED / dataset / "images" / sp) for sp in dataset_splits(dataset)})
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(ULTRA_SCRIPT)
    proc = subprocess.run([args.ultralytics_python, fh.name, json.dumps(payload)], env=_env(args.threads),
                          capture_output=True, text=True, cwd=out)
    os.unlink(fh.name)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{name}: Ultralytics failed:\n{proc.stderr[-3000:]}")
    found = json.loads(line[len("RESULT "):])
    result = dict(dataset=dataset, row=row, seed=seed, train_s=round(found["train_s"], 1),
                  s_per_epoch=round(found["train_s"] / args.epochs, 2), epochs=args.epochs, threads=args.threads,
                  run_dir=found["run_dir"])
    for split, dets in found["dets"].items():
        stats = score_detections(dataset, split, dets)
        result.update({f"{_prefix(split)}{k}": round(stats[k], 4) for k in SCORES})
    return result


def score_detections(dataset: str, split: str, dets: dict[str, list[list[float]]]) -> dict[str, float]:
    """pycocotools stats of xyxy detections keyed by image file name (class index i -> the i-th category id).

    YOLO26's end-to-end head can output inverted boxes (x2 < x1: seen on raccoon, e.g. w = -60 px); they are
    kept, as zero-width boxes that match nothing (false positives, as in Ultralytics' own validator, whose IoU
    of such a box is 0), and counted on stderr.
    """
    from cspdet.engine.coco_metrics import coco_evaluate, load_coco_gt

    gt = load_coco_gt(annotations(dataset, split))
    ids = {Path(im["file_name"]).name: im["id"] for im in gt.dataset["images"]}
    cats = sorted(c["id"] for c in gt.dataset["categories"])
    results = [{"image_id": ids[name], "category_id": cats[int(c)],
                "bbox": [x1, y1, max(x2 - x1, 0.0), max(y2 - y1, 0.0)], "score": s}
               for name, boxes in dets.items() for x1, y1, x2, y2, s, c in boxes]
    inverted = sum(x2 < x1 or y2 < y1 for boxes in dets.values() for x1, y1, x2, y2, _, _ in boxes)
    if inverted:
        print(f"  {dataset}/{split}: {inverted} of {len(results)} detections are inverted boxes (x2 < x1 or "
              "y2 < y1): scored as zero-width false positives", file=sys.stderr, flush=True)
    stats = coco_evaluate(gt, results).stats
    return {k: float(stats[k]) for k in SCORES}


def write_ultralytics_data(dataset: str, out: Path) -> Path:
    """Ultralytics reads YOLO txt: convert the dataset once with cspdet's converter; data YAML with an absolute
    path and the class names in category-id order (index i = the i-th category, as :func:`score_detections`)."""
    root = out / f"{dataset}_yolo"
    data = root / "data.yaml"
    with _CONVERT_LOCK:  # two Ultralytics runs of one dataset may start together (--jobs)
        _write_yolo_copy(dataset, root, data)
    return data


_CONVERT_LOCK = threading.Lock()


def _write_yolo_copy(dataset: str, root: Path, data: Path) -> None:
    if not data.is_file():
        subprocess.run([sys.executable, str(REPO / "tools" / "convert_dataset.py"), str(descriptor(dataset)),
                        "--to", "yolo", "--out", str(root)], check=True, capture_output=True)
        names = "".join(f"  {i}: {json.dumps(n)}\n" for i, n in enumerate(class_names(dataset)))
        splits = "".join(f"{sp}: images/{sp}\n" for sp in dataset_splits(dataset))
        atomic_write(data, f"path: {root}\ntrain: images/train\n{splits}names:\n{names}")


def _csv_text(results: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(results)
    return buf.getvalue()


def _values(rs: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rs if r.get(key) not in (None, "")]


def _mean(vals: list[float], fmt: str) -> str:
    return format(statistics.mean(vals), fmt) if vals else "-"


def _ms(vals: list[float], fmt: str = ".3f") -> str:
    """Mean +- sd over seeds; one seed has no spread to show, so just its value."""
    if not vals:
        return "-"
    if len(vals) == 1:
        return format(vals[0], fmt)
    return f"{format(statistics.mean(vals), fmt)} +- {format(statistics.stdev(vals), fmt)}"


def dataset_table(results: list[dict], dataset: str) -> str:
    """One dataset: per row AP / AP50 (mean +- sd over seeds) for both inference paths, per-size AP, the test
    split where there is one, and the time."""
    lines = [f"### {dataset}", "",
             "| row | seeds | AP | AP50 | AP, NMS path | AP50, NMS path | AP, NMS-free | AP50, NMS-free | AP s / m / l "
             "| test AP | test AP, NMS path | test AP, NMS-free | train s | s / epoch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in ROWS:
        rs = [r for r in results if r["row"] == row and r["dataset"] == dataset]
        if not rs:
            continue
        # COCOeval gives -1 for a size with no ground-truth boxes (raccoon has no small ones): shown as "-"
        sizes = " / ".join(f"{statistics.mean(v):.3f}" if (v := [x for x in _values(rs, k) if x >= 0]) else "-"
                           for k in ("APs", "APm", "APl"))
        lines.append(f"| {row} | {','.join(str(r['seed']) for r in rs)} | {_ms(_values(rs, 'AP'))} | "
                     f"{_ms(_values(rs, 'AP50'))} | {_ms(_values(rs, 'nms_AP'))} | {_ms(_values(rs, 'nms_AP50'))} | "
                     f"{_ms(_values(rs, 'o2o_AP'))} | {_ms(_values(rs, 'o2o_AP50'))} | "
                     f"{sizes} | {_ms(_values(rs, 'test_AP'))} | {_ms(_values(rs, 'test_nms_AP'))} | "
                     f"{_ms(_values(rs, 'test_o2o_AP'))} | "
                     f"{_mean(_values(rs, 'train_s'), '.0f')} | {_mean(_values(rs, 's_per_epoch'), '.1f')} |")
    return "\n".join(lines)


def panel_means(results: list[dict], row: str, key: str, panel: tuple[str, ...] = PANEL,
                seeds: list[int] | None = None) -> list[float]:
    """Per seed (``seeds``, default every seed of ``row``), the mean of ``key`` over the panel datasets; only seeds
    that have it on every panel dataset count."""
    means = []
    for seed in seeds if seeds is not None else sorted({int(r["seed"]) for r in results if r["row"] == row}):
        vals = [float(r[key]) for r in results if r["row"] == row and int(r["seed"]) == seed
                and r["dataset"] in panel and r.get(key) not in (None, "")]
        if len(vals) == len(panel):
            means.append(statistics.mean(vals))
    return means


def panel_table(results: list[dict]) -> str:
    """The panel: per seed the mean over the four datasets, then mean +- sd over seeds."""
    lines = ["### panel mean (raccoon, cards, microcontroller, thermal)", "",
             "| row | seeds complete | AP | AP50 | AP, NMS path | AP50, NMS path | AP, NMS-free | AP50, NMS-free "
             "| train s (mean per dataset) | s / epoch |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in ROWS:
        ap = panel_means(results, row, "AP")
        if not ap:
            continue
        lines.append(f"| {row} | {len(ap)} | {_ms(ap)} | {_ms(panel_means(results, row, 'AP50'))} | "
                     f"{_ms(panel_means(results, row, 'nms_AP'))} | {_ms(panel_means(results, row, 'nms_AP50'))} | "
                     f"{_ms(panel_means(results, row, 'o2o_AP'))} | {_ms(panel_means(results, row, 'o2o_AP50'))} | "
                     f"{_ms(panel_means(results, row, 'train_s'), '.0f')} | "
                     f"{_ms(panel_means(results, row, 's_per_epoch'), '.1f')} |")
    return "\n".join(lines)


#: Issue 23's bar: panel-mean AP at least the better Ultralytics row's + 0.03, in at most 0.8x its training wall
#: time, and on no dataset more than 0.02 below it.
REFERENCES = ("ultralytics_yolo11n", "ultralytics_yolo26n")
BAR_AP, BAR_TIME, BAR_WORST = 0.03, 0.8, -0.02


def _panel_mean(results: list[dict], row: str, key: str, seeds: list[int]) -> float | None:
    """Mean over ``seeds`` of the per-seed panel mean of ``key`` (None where a run lacks it)."""
    means = panel_means(results, row, key, seeds=seeds)
    return statistics.mean(means) if len(means) == len(seeds) else None


def acceptance_table(results: list[dict]) -> str:
    """Every cspdet row against the better of :data:`REFERENCES`: panel AP through each inference path, the AP
    difference, the training-time ratio and the worst dataset's difference (default path), each against the issue's
    bar. First on the seeds every row has on the whole panel; then, where a row has more complete seeds than the
    references, its mean over all of them against each reference's mean over all of its own."""
    def complete(row: str) -> set[int]:
        seeds = {int(r["seed"]) for r in results if r["row"] == row}
        return {s for s in seeds if {r["dataset"] for r in results if r["row"] == row and int(r["seed"]) == s}
                >= set(PANEL)}

    def dataset_mean(row: str, dataset: str, seeds: list[int]) -> float:
        return statistics.mean(float(r["AP"]) for r in results
                               if r["row"] == row and r["dataset"] == dataset and int(r["seed"]) in seeds)

    def mark(ok: bool) -> str:
        return "met" if ok else "not met"

    def line(row: str, seeds: list[int], ref_seeds: dict[str, list[int]]) -> str:
        ref = max(REFERENCES, key=lambda r: _panel_mean(results, r, "AP", ref_seeds[r]))
        fs = ref_seeds[ref]
        ap, ref_ap = _panel_mean(results, row, "AP", seeds), _panel_mean(results, ref, "AP", fs)
        paths = " | ".join("-" if (v := _panel_mean(results, row, key, seeds)) is None else f"{v:.3f}"
                           for key in ("nms_AP", "o2o_AP"))
        times = _panel_mean(results, row, "train_s", seeds), _panel_mean(results, ref, "train_s", fs)
        ratio = None if None in times else times[0] / times[1]  # None: a run's time was not measured cleanly
        per_dataset = {d: dataset_mean(row, d, seeds) - dataset_mean(ref, d, fs) for d in PANEL}
        worst = min(per_dataset, key=per_dataset.get)
        label = ",".join(map(str, seeds)) + ("" if fs == seeds else f" vs {','.join(map(str, fs))}")
        return (f"| {row} | {label} | {ap:.3f} | {paths} | {ref} ({ref_ap:.3f}) | "
                f"{ap - ref_ap:+.3f} ({mark(ap - ref_ap >= BAR_AP)}) | "
                f"{'-' if ratio is None else f'{ratio:.2f} ({mark(ratio <= BAR_TIME)})'} | "
                f"{per_dataset[worst]:+.3f} {worst} ({mark(per_dataset[worst] >= BAR_WORST)}) |")

    ref_complete = {ref: sorted(complete(ref)) for ref in REFERENCES}
    shared = set.intersection(*(set(s) for s in ref_complete.values()))
    lines = ["### against the better Ultralytics row (seeds both have on the whole panel; then every seed each has)",
             "", "| row | seeds | panel AP | AP, NMS path | AP, NMS-free | better reference (AP) | AP diff (bar +0.03) "
             "| train time x reference (bar 0.8) | worst dataset AP diff (bar -0.02) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row, (framework, _, _) in ROWS.items():
        own = sorted(complete(row)) if framework == "cspdet" else []
        seeds = sorted(set(own) & shared)
        if not seeds:
            continue
        lines.append(line(row, seeds, {ref: seeds for ref in REFERENCES}))
        if own != seeds or any(s != seeds for s in ref_complete.values()):
            lines.append(line(row, own, ref_complete))
    return "\n".join(lines)


def summarise(results: list[dict]) -> str:
    datasets = [d for d in (*PANEL, *DIAGNOSTIC) if any(r["dataset"] == d for r in results)]
    return "\n\n".join([panel_table(results), acceptance_table(results),
                         *(dataset_table(results, d) for d in datasets)])


def run_order(datasets: list[str], rows: list[str], seeds: list[int]) -> list[tuple[str, str, int]]:
    """Seed by seed, dataset by dataset, the multi-seed rows interleaved (cspdet, Ultralytics, ...), single-seed
    rows after seed 0: a machine that gets busier or quieter during the hours a benchmark takes affects both
    frameworks alike, and the first seed of the headline comparison is complete on the whole panel first."""
    multi = [r for r in rows if ROWS[r][2] == "seeds"]
    single = [r for r in rows if ROWS[r][2] != "seeds"]
    order = [(d, r, s) for s in seeds for d in datasets for r in multi]
    return order + [(d, r, 0) for d in datasets for r in single]


def load_results(csv_path: Path) -> list[dict]:
    """Rows of an earlier (possibly interrupted) run; a CSV from before the panel is raccoon's."""
    if not csv_path.is_file():
        return []
    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r.setdefault("dataset", "raccoon")
        r["dataset"] = r["dataset"] or "raccoon"
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(PANEL), choices=[*PANEL, *DIAGNOSTIC])
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every run (both frameworks)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time (e.g. --jobs 2 --threads 1 on 2 cores: a cspdet and an Ultralytics run "
                             "side by side, each on one core; recorded in the CSV's jobs column)")
    parser.add_argument("--ultralytics-python", default=str(REPO.parent / "benchvenv" / "bin" / "python"),
                        help="interpreter of a benchmark venv with ultralytics installed")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_learning"))
    parser.add_argument("--dry-run", action="store_true", help="print the runs still to do and the summary; run none")
    args = parser.parse_args(argv)
    missing = [d for d in args.datasets if not annotations(d, "val").is_file()]
    if missing:
        print(f"datasets not found under {SHARED}: {', '.join(missing)}; nothing to do", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    results = load_results(csv_path)
    done = {(r["dataset"], r["row"], int(r["seed"])) for r in results}
    todo = [key for key in run_order(args.datasets, args.rows, args.seeds) if key not in done]
    print(f"{len(done)} runs in {csv_path}; {len(todo)} to do"
          + (f", {args.jobs} at a time" if args.jobs > 1 and not args.dry_run else ""), flush=True)
    if args.dry_run:
        for dataset, row, seed in todo:
            print(f"  would run {dataset} {row} seed {seed}")
    failed = 0
    # Each run is a child process (training) plus scoring in this process: with --jobs 2 a cspdet and an
    # Ultralytics run train at the same time, one thread each, so both see the same machine at the same moment.
    torch_threads(args.threads)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {} if args.dry_run else {pool.submit(run_one, key, args, out): key for key in todo}
        for future in as_completed(futures):
            dataset, row, seed = futures[future]
            try:
                result = future.result()
            except Exception as err:  # one failed run does not stop the others; it is retried on the next call
                failed += 1
                print(f"{dataset} {row} seed {seed}: FAILED: {err}", file=sys.stderr, flush=True)
                continue
            results.append(result)
            print(f"{dataset} {row} seed {seed}: AP {result['AP']:.4f} AP50 {result['AP50']:.4f} "
                  f"train {result['train_s']:.0f} s", flush=True)
            atomic_write(csv_path, _csv_text(results))
    table = summarise(results)
    if not args.dry_run:
        atomic_write(out / "results.md", table + "\n")
    print(table)
    return 1 if failed else 0


def run_one(key: tuple[str, str, int], args: argparse.Namespace, out: Path) -> dict:
    dataset, row, seed = key
    framework, spec, _ = ROWS[row]
    run = run_ultralytics if framework == "ultralytics" else run_cspdet
    return {**run(dataset, row, spec, seed, args, out), "jobs": args.jobs}


def torch_threads(threads: int) -> None:
    """Scoring runs in this process: the same thread count as the training runs."""
    import torch

    torch.set_num_threads(threads)


if __name__ == "__main__":
    sys.exit(main())
