#!/usr/bin/env python
"""Train a detector: ``python tools/train.py CONFIG [section.key=value ...] [--resume [PATH]]``.

Examples::

    python tools/train.py configs/cspdarknet_yolo.yaml train.batch_size=16 train.epochs=100
    python tools/train.py --resume                          # newest run under runs/train
    python tools/train.py --resume runs/train/exp/last.pt   # a given run (its own config is used)

Multi-GPU / multi-node with torchrun (the global train.batch_size is split over the processes)::

    torchrun --nproc_per_node=8 tools/train.py configs/cspdarknet_yolo.yaml
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=HOST --master_port=29500 \\
        tools/train.py configs/cspdarknet_yolo.yaml       # node_rank=1 on the second machine
    # every node needs the data and the run directory at the same path (shared file system)

Outputs (one run directory): config.yaml, last.pt, best.pt, results.csv, TensorBoard events, eval/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train a cspdet detector.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1],
    )
    parser.add_argument("config", nargs="?", help="config YAML (optional with --resume: the run's own config)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=10")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                        help="continue a run: its last.pt or run directory (default: the newest run)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars (e.g. for log files)")
    args = parser.parse_args(argv)
    # "--resume configs/x.yaml" would otherwise take the config as the checkpoint path.
    if isinstance(args.resume, str) and args.resume.endswith((".yaml", ".yml")):
        if args.config is not None:
            args.overrides.insert(0, args.config)
        args.config, args.resume = args.resume, True
    if args.config is not None and "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        args.overrides.insert(0, args.config)
        args.config = None
    if args.config is None and args.resume is None:
        parser.error("a CONFIG is required (or --resume to continue a run)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from cspdet.config import ConfigError, load_config

    if args.config is not None:
        try:  # config errors first, before the heavy imports: a typo answers instantly
            cfg = load_config(args.config, args.overrides)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    from cspdet.engine.checkpoint import load_checkpoint
    from cspdet.engine.run import find_resume_checkpoint, run_training_cli
    from cspdet.engine.trainer import Trainer, config_from_checkpoint

    def train() -> dict:
        if args.config is None:
            # --resume without a config: the run's own config, plus any overrides of resume-safe keys.
            base = load_config(None, args.overrides)
            path = find_resume_checkpoint(args.resume, base.train.output_dir)
            run_cfg = config_from_checkpoint(load_checkpoint(path, kind="detector"), path)
            if args.overrides:
                from cspdet.config import config_from_dict, config_to_dict, parse_override

                raw = config_to_dict(run_cfg)
                for text in args.overrides:
                    key, value = parse_override(text)
                    section, _, name = key.partition(".")
                    raw.setdefault(section, {})[name] = value
                run_cfg = config_from_dict(raw, source="on the command line")
            return Trainer(run_cfg, resume=path, progress=not args.no_progress).fit()
        return Trainer(cfg, resume=args.resume, progress=not args.no_progress).fit()

    return run_training_cli(
        train, lambda s: f"done: {s['epoch']} epochs, best AP {s['best_ap']:.4f}, run {s['run_dir']}")


if __name__ == "__main__":
    sys.exit(main())
