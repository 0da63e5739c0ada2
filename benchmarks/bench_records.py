"""Time and memory of reading a COCO-train-sized annotation file, and what loader workers pay for the records.

    python benchmarks/bench_records.py                    # 118,287 images, ~860k boxes (COCO train2017 sizes)
    python benchmarks/bench_records.py --images 20000     # smaller, quicker
    python benchmarks/bench_records.py --keep /tmp/cocosyn  # keep (and reuse) the synthetic dataset there
    python benchmarks/bench_records.py --keep /tmp/cocosyn --repo ../main   # another checkout (before / after)

A synthetic COCO instances json (deterministic: seed 0; no segmentation polygons, the rest like COCO: 80
categories with COCO's ids, 1% crowd boxes, ``area``, integer ids) is written to a temporary folder with an
empty file per image (the readers look each image up on disk; nothing is decoded). Each measurement runs in a
fresh Python process:

- ``build_dataset``: ``cspdet.data.build_dataset`` of the split: wall time, peak RSS (``VmHWM``) and peak RSS
  net of the imports (``VmHWM`` right after ``import cspdet.data``, i.e. torch, subtracted);
- ``pycocotools COCO()``: the same for ``pycocotools.coco.COCO(json)`` (net: after ``import pycocotools.coco``);
- ``8 workers, 1 epoch``: a DataLoader with 8 worker processes over a view that only reads records (the
  record, ``dataset.targets`` and the path of every image; no decoding), one epoch: the growth of each
  worker's private dirty memory (``Private_Dirty`` from ``/proc/self/smaps_rollup``: pages the worker copied
  from its parent, e.g. by touching refcounts of shared Python objects), summed over the workers.

This is a benchmark, not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_coco(folder: Path, images: int, boxes_per_image: float = 7.27, seed: int = 0) -> Path:
    """Write ``folder/annotations/train.json``, ``folder/images/<id>.jpg`` (empty) and ``folder/dataset.yaml``."""
    import numpy as np

    ann_file = folder / "annotations" / "train.json"
    if ann_file.is_file():
        return folder / "dataset.yaml"
    rng = np.random.default_rng(seed)
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    img_dir = folder / "images"
    img_dir.mkdir(exist_ok=True)
    cat_ids = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
    ids = rng.choice(np.arange(1, 600_000), images, replace=False)
    ws = rng.integers(200, 641, images)
    hs = rng.integers(200, 641, images)
    counts = rng.poisson(boxes_per_image, images)
    n = int(counts.sum())
    img_of = np.repeat(np.arange(images), counts)
    bw = np.round(rng.uniform(0.02, 0.9, n) * ws[img_of], 2)
    bh = np.round(rng.uniform(0.02, 0.9, n) * hs[img_of], 2)
    bx = np.round(rng.uniform(0, 1, n) * (ws[img_of] - bw), 2)
    by = np.round(rng.uniform(0, 1, n) * (hs[img_of] - bh), 2)
    cats = rng.choice(cat_ids, n)
    crowd = rng.uniform(0, 1, n) < 0.01
    data = {
        "info": {"description": "synthetic COCO-train-sized file (benchmarks/bench_records.py)"},
        "images": [{"id": int(i), "file_name": f"{int(i):012d}.jpg", "height": int(h), "width": int(w)}
                   for i, h, w in zip(ids, hs, ws)],
        "annotations": [{"id": k + 1, "image_id": int(ids[g]), "category_id": int(c), "iscrowd": int(cr),
                         "area": round(float(w * h) * 0.6, 2), "bbox": [float(x), float(y), float(w), float(h)]}
                        for k, (g, c, cr, x, y, w, h) in enumerate(zip(img_of, cats, crowd, bx, by, bw, bh))],
        "categories": [{"id": c, "name": f"class{c}", "supercategory": "x"} for c in cat_ids],
    }
    for i in ids:
        (img_dir / f"{int(i):012d}.jpg").touch()
    tmp = ann_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(ann_file)
    (folder / "dataset.yaml").write_text(
        "format: coco\npath: .\nname: cocosyn\ntrain: {images: images, annotations: annotations/train.json}\n")
    return folder / "dataset.yaml"


_PRELUDE = """
import json, sys, time
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'):
            return int(line.split()[1]) * 1024
"""

_BUILD = _PRELUDE + """
import warnings
import cspdet.data
base = status('VmHWM')
t = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    ds = cspdet.data.build_dataset(sys.argv[1], 'train')
dt = time.perf_counter() - t
print(json.dumps({'time': dt, 'peak': status('VmHWM'), 'net': status('VmHWM') - base, 'images': len(ds),
                  'after': status('VmRSS') - base}))
"""

_COCO = _PRELUDE + """
import contextlib, io
import pycocotools.coco
base = status('VmHWM')
t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    coco = pycocotools.coco.COCO(sys.argv[1])
dt = time.perf_counter() - t
print(json.dumps({'time': dt, 'peak': status('VmHWM'), 'net': status('VmHWM') - base, 'images': len(coco.imgs),
                  'after': status('VmRSS') - base}))
"""

_WORKERS = _PRELUDE + """
import os, warnings
import numpy as np
import torch.utils.data
import cspdet.data

def private_dirty():
    for line in open('/proc/self/smaps_rollup'):
        if line.startswith('Private_Dirty:'):
            return int(line.split()[1]) * 1024

class RecordsOnly(torch.utils.data.Dataset):
    # what a training view reads of every sample before decoding: the record, its targets, its path
    def __init__(self, ds):
        self.ds = ds
    def __len__(self):
        return len(self.ds)
    def __getitem__(self, i):
        rec = self.ds.records[i]
        boxes, labels = self.ds.targets(i, rec.height or 1, rec.width or 1)
        n = len(labels) + len(rec.path) + int(rec.image_id > 0)
        return n, private_dirty() - BASE[0] if i % 997 == 0 else -1

BASE = [0]
def init(_):
    BASE[0] = private_dirty()

def collate(batch):
    return torch.utils.data.get_worker_info().id, max(b[1] for b in batch)

with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    ds = cspdet.data.build_dataset(sys.argv[1], 'train')
loader = torch.utils.data.DataLoader(RecordsOnly(ds), batch_size=512, num_workers=8, worker_init_fn=init,
                                     collate_fn=collate, shuffle=True, generator=torch.Generator().manual_seed(0))
t = time.perf_counter()
growth = {}
for wid, g in loader:
    growth[wid] = max(growth.get(wid, 0), g)
dt = time.perf_counter() - t
print(json.dumps({'time': dt, 'growth': sum(growth.values()), 'per_worker': max(growth.values())}))
"""


def run(code: str, arg: str, repo: Path = REPO) -> dict:
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code), arg], capture_output=True, text=True, env=env,
                         cwd=repo)  # python -c puts the working directory first on sys.path
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=118_287)
    p.add_argument("--keep", help="folder for the synthetic dataset (kept and reused); default: a temp folder")
    p.add_argument("--repo", type=Path, default=REPO, help="the cspdet checkout to measure (default: this one)")
    p.add_argument("--skip-workers", action="store_true")
    p.add_argument("--skip-pycocotools", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        descriptor = make_coco(folder, args.images)
        ann = folder / "annotations" / "train.json"
        n_ann = len(json.loads(ann.read_text())["annotations"])
        mb = 1 / 2**20
        print(f"# {args.images} images, {n_ann} boxes, {ann.stat().st_size * mb:.0f} MB json; python "
              f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} cpus, load "
              f"{open('/proc/loadavg').read().split()[0]}")
        print(f"# cspdet from {args.repo.resolve()}")
        rows = [("build_dataset", run(_BUILD, str(descriptor), args.repo))]
        if not args.skip_pycocotools:
            rows.append(("pycocotools COCO()", run(_COCO, str(ann))))
        print(f"| {'what':<22} | {'time s':>7} | {'peak RSS MB':>11} | {'peak net of imports MB':>22} | "
              f"{'RSS after, net MB':>17} |")
        print(f"|{'-' * 24}|{'-' * 9}:|{'-' * 13}:|{'-' * 24}:|{'-' * 19}:|")
        for name, r in rows:
            print(f"| {name:<22} | {r['time']:>7.2f} | {r['peak'] * mb:>11.0f} | {r['net'] * mb:>22.0f} | "
                  f"{r['after'] * mb:>17.0f} |")
        if not args.skip_workers:
            w = run(_WORKERS, str(descriptor), args.repo)
            print(f"\n8 workers, one epoch of record access: {w['time']:.2f} s, private memory growth "
                  f"{w['growth'] * mb:.0f} MB in all ({w['per_worker'] * mb:.0f} MB the largest worker)")


if __name__ == "__main__":
    main()
