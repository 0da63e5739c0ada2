"""Images per second of the full training data pipeline (mosaic + affine + mixup + HSV + flip + collate).

    python benchmarks/bench_data.py                       # coco128 at 640, 0 and 2 workers, cache off and on
    python benchmarks/bench_data.py --workers 0 --cache ram --epochs 3
    python benchmarks/bench_data.py --workers 0 --cv2-threads 1   # OpenCV single-threaded in the process

Each configuration runs one warm-up epoch (which also fills the cache and starts the workers), then times
``--epochs`` full epochs of batches. A training image uses 5 images (4 mosaic tiles + 1 MixUp partner);
partners come from the sample's pool (``mosaic_pool``, 64) and a per-process buffer of fitted images
means each JPEG is decoded about once per epoch with 0 workers (about twice with 2) without a cache; with
``--cache ram`` each image is decoded once per run.

Two rates per configuration:

- ``img/s``: wall-clock images per second, what a training run would see on this machine right now;
- ``img/CPU-s``: images per CPU-second of the main process *and* its DataLoader workers (user + system
  time of every thread, from /proc), what one free core would give. With 0 workers OpenCV may still use
  its own thread pool (``cv2.getNumThreads()``, printed), which raises ``img/s`` at some CPU cost.

The machine is usually shared: the load average (from /proc/loadavg) is printed before and after every
configuration. Wall rates are only meaningful when the load is below the core count; compare the
per-CPU-second numbers otherwise, and interleave runs of the versions being compared.
This is a benchmark, not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

try:
    import cspdet  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the given processes (all their threads), from /proc/<pid>/stat; a
    process that has gone contributes nothing (persistent workers live for the whole measurement)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "(comm)", which may contain spaces
            total += (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def _load() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _worker_pids(loader) -> list[int]:
    iterator = getattr(loader, "_iterator", None)  # persistent workers: the DataLoader keeps its iterator
    return [w.pid for w in getattr(iterator, "_workers", []) if w.pid is not None]


def bench(
    dataset: str, workers: int, cache: str, img_size: int, batch_size: int, epochs: int, cv2_threads: int | None
) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU-second of the main process plus its workers)."""
    import cv2

    from cspdet.data import build_dataset, build_train_loader

    if cv2_threads is not None:
        cv2.setNumThreads(cv2_threads)
    ds = build_dataset(dataset, "train", cache=False if cache == "off" else cache)
    loader = build_train_loader(ds, {"img_size": [img_size, img_size], "workers": workers}, batch_size=batch_size, seed=0)
    loader.dataset.set_epoch(0)
    for _ in loader:  # warm-up: workers start, cache fills
        pass
    pids = [os.getpid(), *_worker_pids(loader)]
    n = 0
    start, cpu_start = time.perf_counter(), _cpu_seconds(pids)
    for epoch in range(1, epochs + 1):
        loader.dataset.set_epoch(epoch)
        for batch in loader:
            n += batch["images"].shape[0]
    wall, cpu = time.perf_counter() - start, _cpu_seconds(pids) - cpu_start
    del loader  # stop the workers before the next configuration
    return n / wall, n / max(cpu, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_data.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=str(REPO / "datasets" / "coco128.yaml"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--cache", nargs="+", default=["off", "ram"], choices=["off", "ram", "disk"])
    parser.add_argument("--img-size", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cv2-threads", type=int, default=None,
                        help="cv2.setNumThreads in the main process (default: OpenCV's own choice; "
                             "DataLoader workers always use 1)")  # fmt: skip
    args = parser.parse_args(argv)
    import cv2

    if args.cv2_threads is not None:
        cv2.setNumThreads(args.cv2_threads)
    print(
        f"dataset {args.dataset}, img {args.img_size}, batch {args.batch_size}, {args.epochs} timed epoch(s); "
        f"{os.cpu_count()} CPUs, OpenCV {cv2.__version__} with {cv2.getNumThreads()} thread(s) in the main process"
    )
    for cache in args.cache:
        for workers in args.workers:
            before = _load()
            rate, cpu_rate = bench(args.dataset, workers, cache, args.img_size, args.batch_size, args.epochs,
                                   args.cv2_threads)  # fmt: skip
            print(
                f"workers={workers} cache={cache:<4} {rate:7.1f} img/s  {cpu_rate:7.1f} img/CPU-s"
                f"   (load average {before} -> {_load()})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
