"""Images per second of the full training data pipeline (mosaic + affine + mixup + HSV + flip + collate).

    python benchmarks/bench_data.py                       # coco128 at 640, 0 and 2 workers, cache off and on
    python benchmarks/bench_data.py --workers 0 --cache ram --epochs 3

Each configuration runs one warm-up epoch (which also fills the cache and starts the workers), then times
``--epochs`` full epochs of batches. A training image uses 5 images (4 mosaic tiles + 1 MixUp partner);
partners come from the sample's pool (``mosaic_pool``, 64) and a per-process buffer of fitted images
means each JPEG is decoded about once per epoch with 0 workers (about twice with 2) without a cache; with
``--cache ram`` each image is decoded once per run. The machine is usually shared: compare the
"per CPU-second" numbers, and interleave runs of the versions being compared.
This is a benchmark, not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    import cspdet  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]


def bench(
    dataset: str, workers: int, cache: str, img_size: int, batch_size: int, epochs: int, cv2_threads: int | None
) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU-second of this process). The second number is what
    one free core would give; it is only meaningful with workers=0 (workers' CPU time is not counted)."""
    import cv2

    from cspdet.data import build_dataset, build_train_loader

    if cv2_threads is not None:
        cv2.setNumThreads(cv2_threads)
    ds = build_dataset(dataset, "train", cache=False if cache == "off" else cache)
    loader = build_train_loader(ds, {"img_size": [img_size, img_size], "workers": workers}, batch_size=batch_size, seed=0)
    loader.dataset.set_epoch(0)
    for _ in loader:  # warm-up: workers start, cache fills
        pass
    n = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(1, epochs + 1):
        loader.dataset.set_epoch(epoch)
        for batch in loader:
            n += batch["images"].shape[0]
    return n / (time.perf_counter() - start), n / max(time.process_time() - cpu_start, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_data.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=str(REPO / "datasets" / "coco128.yaml"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--cache", nargs="+", default=["off", "ram"], choices=["off", "ram", "disk"])
    parser.add_argument("--img-size", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cv2-threads", type=int, default=None,
                        help="cv2.setNumThreads in the main process (default: OpenCV's own choice)")
    args = parser.parse_args(argv)
    print(f"dataset {args.dataset}, img {args.img_size}, batch {args.batch_size}, {args.epochs} timed epoch(s)")
    for cache in args.cache:
        for workers in args.workers:
            rate, cpu_rate = bench(args.dataset, workers, cache, args.img_size, args.batch_size, args.epochs,
                                   args.cv2_threads)  # fmt: skip
            extra = f"   ({cpu_rate:.1f} img per CPU-second of the process)" if workers == 0 else ""
            print(f"workers={workers} cache={cache:<4} {rate:7.1f} img/s{extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
