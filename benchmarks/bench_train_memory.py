"""Host memory of a long training run: resident set size (RSS) per iteration must stay flat.

    python benchmarks/bench_train_memory.py                     # 400 iterations, 0 workers
    python benchmarks/bench_train_memory.py --iters 1000 --workers 2

Trains a tiny CSPDarknet (depth 0.33, width 0.125) at 64 px on a generated shapes dataset with the full
default augmentation (mosaic, mixup, affine, HSV, flip), a last.pt save every epoch, TensorBoard logging and a
results.csv row per epoch -- every per-iteration and per-epoch code path of the trainer except evaluation,
which runs once at the end. RSS of the trainer process (plus its loader workers, with ``--workers``) is
sampled after every optimizer step; the report gives RSS after warm-up and at the end, and the slope of a
least-squares line over the second half of the run. A leak of one batch per iteration would show as tens of
KiB/iteration; allocator noise is a few hundred KiB in total.
This is a benchmark, not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

try:
    import cspdet  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_kib(pids: list[int]) -> int:
    """Sum of VmRSS (KiB) of the given processes (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:  # a worker that just exited
            pass
    return total


def child_pids() -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()]
    except FileNotFoundError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=400, help="training iterations (4 per epoch)")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    if not Path("/proc/self/status").is_file():
        sys.exit("needs Linux /proc to read RSS")

    import numpy as np
    import torch

    from cspdet.config import config_from_dict
    from cspdet.data.synthetic import make_shapes_dataset
    from cspdet.engine.trainer import Trainer

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_memory_"))
    data = make_shapes_dataset(tmp / "shapes", num_train=16, num_val=4, size=64, seed=0)
    desc = tmp / "shapes.yaml"
    desc.write_text(f"format: coco\npath: {data}\n"
                    "train: {images: images/train, annotations: annotations/instances_train.json}\n"
                    "val: {images: images/val, annotations: annotations/instances_val.json}\n")
    epochs = max(2, -(-args.iters // 4))
    cfg = config_from_dict({
        "model": {"name": "cspdarknet_s", "num_classes": 3, "depth": 0.33, "width": 0.125},
        "data": {"dataset": str(desc), "img_size": [64, 64], "workers": args.workers},
        "train": {"epochs": epochs, "batch_size": 4, "warmup_epochs": 1, "no_aug_epochs": 1, "eval_interval": 0,
                  "output_dir": str(tmp / "runs"), "name": "mem", "log_images": 1, "device": "cpu"},
        "eval": {"img_size": [64, 64], "batch_size": 4},
    })
    samples: list[int] = []

    class Probe(Trainer):
        def _optimizer_step(self, grad_clip):
            super()._optimizer_step(grad_clip)
            samples.append(rss_kib([os.getpid(), *child_pids()]))

    Probe(cfg, progress=False).fit()
    n = len(samples)
    warm = min(50, n // 4)
    half = samples[n // 2:]
    slope = float(np.polyfit(np.arange(len(half)), np.asarray(half, dtype=np.float64), 1)[0])
    print(f"{n} iterations ({epochs} epochs x 4), workers={args.workers}, run dir {tmp / 'runs' / 'mem'}")
    print(f"RSS after {warm} iterations: {samples[warm - 1] / 1024:.1f} MiB; at the end: {samples[-1] / 1024:.1f} MiB; "
          f"min/max over iterations {warm}..{n}: {min(samples[warm:]) / 1024:.1f}/{max(samples[warm:]) / 1024:.1f} MiB")
    print(f"slope over the second half: {slope:+.2f} KiB/iteration "
          f"({slope * 1000 / 1024:+.2f} MiB per 1000 iterations)")


if __name__ == "__main__":
    main()
