"""kill -9 a training run at random moments (and right when a checkpoint temp file appears), ``--resume`` it
each time, and check that the finished run equals one that was never interrupted.

    python benchmarks/check_kill_resume.py                  # 6 kills, tiny model, 10 epochs of 2 iterations
    python benchmarks/check_kill_resume.py --kills 10 --epochs 6

Each round starts ``tools/train.py`` (the first time with the config, then with ``--resume RUN``) and sends
SIGKILL either after a random delay or the moment a ``.last.pt.*.tmp`` / ``.best.pt.*.tmp`` file shows up
(i.e. during a checkpoint write), alternately. After every kill ``last.pt`` (if any) must load with
``weights_only=True``. After ``--kills`` kills the run is resumed to the end. Finally its weights (raw and
EMA), iteration count and results.csv epochs are compared with an uninterrupted run of the same config.
A scripted check rather than a test: it takes a minute or more (every round starts a Python process).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import cspdet  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(REPO))


def write_config(tmp: Path, epochs: int) -> Path:
    import yaml

    from cspdet.data.synthetic import make_shapes_dataset

    data = make_shapes_dataset(tmp / "shapes", num_train=8, num_val=4, size=64, seed=0)
    desc = tmp / "shapes.yaml"
    desc.write_text(f"format: coco\npath: {data}\n"
                    "train: {images: images/train, annotations: annotations/instances_train.json}\n"
                    "val: {images: images/val, annotations: annotations/instances_val.json}\n")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": "cspdarknet_s", "num_classes": 3, "depth": 0.33, "width": 0.125},
        "data": {"dataset": str(desc), "img_size": [64, 64], "workers": 0},
        "train": {"epochs": epochs, "batch_size": 4, "warmup_epochs": 1, "no_aug_epochs": 1, "eval_interval": 2,
                  "output_dir": str(tmp / "runs"), "name": "exp", "log_images": 1, "device": "cpu"},
        "eval": {"img_size": [64, 64], "batch_size": 4},
    }))
    return cfg


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "tools/train.py", *args, "--no-progress"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    rnd = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="check_kill_resume_"))
    cfg = write_config(tmp, args.epochs)

    t0 = time.monotonic()
    ref = start([str(cfg), "train.name=reference"])
    out = ref.communicate()[0]
    full = time.monotonic() - t0
    if ref.returncode != 0:
        sys.exit(f"reference run failed:\n{out[-3000:]}")
    print(f"uninterrupted run: {full:.1f} s")

    run = tmp / "runs" / "exp"
    kills = rounds = 0
    while True:
        rounds += 1
        stale = set(run.glob(".*.pt.*.tmp"))  # left by an earlier kill; the resumed run deletes them
        proc = start(["--resume", str(run)] if (run / "last.pt").exists() else [str(cfg), "train.exist_ok=true"])
        if kills >= args.kills:
            out = proc.communicate()[0]
            if proc.returncode != 0:
                sys.exit(f"final resume failed:\n{out[-3000:]}")
            break
        on_save = kills % 2 == 1
        deadline = time.monotonic() + (full * 3 if on_save else rnd.uniform(0.4, 0.9) * full)
        while proc.poll() is None and time.monotonic() < deadline:
            if on_save and set(run.glob(".*.pt.*.tmp")) - stale:
                break
            time.sleep(0.002 if on_save else 0.05)
        if proc.poll() is not None:  # finished (or failed) before the kill: resume must still be fine
            out = proc.communicate()[0]
            if proc.returncode != 0:
                sys.exit(f"round {rounds} failed:\n{out[-3000:]}")
            print(f"round {rounds}: finished before the kill")
            break
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        kills += 1
        temps = sorted(p.name for p in set(run.glob(".*.tmp")) - stale)  # this round's partial save, if any
        epoch = torch.load(run / "last.pt", weights_only=True)["epoch"] if (run / "last.pt").exists() else None
        print(f"round {rounds}: SIGKILL {'during a save' if on_save and temps else 'at a random moment'}; "
              f"last.pt epoch {epoch}; partial temp file {temps or 'none'}")

    a = torch.load(tmp / "runs" / "reference" / "last.pt", weights_only=True)
    b = torch.load(run / "last.pt", weights_only=True)

    def max_diff(x: dict, y: dict) -> float:
        return max(((x[k].double() - y[k].double()).abs().max().item() if x[k].numel() else 0.0) for k in x)

    with (run / "results.csv").open() as fh:
        epochs = [r["epoch"] for r in csv.DictReader(fh)]
    raw, ema = max_diff(a["trainer"]["model"], b["trainer"]["model"]), max_diff(a["model"], b["model"])
    print(f"{kills} kills in {rounds} rounds; final epoch {b['epoch']}, iteration {b['trainer']['iteration']} "
          f"(reference {a['trainer']['iteration']}); results.csv epochs {epochs}; temp files left "
          f"{[p.name for p in run.glob('.*.tmp')] or 'none'}")
    print(f"max |w_killed - w_uninterrupted|: raw {raw:.3g}, EMA {ema:.3g}; AP {b['metrics'].get('AP')} vs "
          f"{a['metrics'].get('AP')}")
    ok = (b["epoch"] == a["epoch"] and raw <= 1e-6 and ema <= 1e-6 and epochs == [str(e) for e in
          range(1, args.epochs + 1)] and not list(run.glob(".*.tmp")))
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
