#!/usr/bin/env python
"""Pretrain a CSPNet backbone as an ImageNet-style classifier: ``python tools/pretrain.py CONFIG [overrides]``.

The config's ``pretrain:`` section picks the model (any CSPNet preset or ``custom`` stage_defs) and the
ImageFolder data (``<data>/train/<class>/*.jpg``, ``<data>/val/<class>/*.jpg``). Example::

    python tools/pretrain.py configs/pretrain_cspdarknet_s.yaml pretrain.data=/data/imagenet pretrain.epochs=90
    python tools/pretrain.py CONFIG --resume runs/pretrain/exp/last.pt
    torchrun --nproc_per_node=8 tools/pretrain.py CONFIG          # global pretrain.batch_size over 8 processes

Then initialise a detector's backbone with it: ``python tools/train.py DET_CONFIG model.name=cspdarknet_s
model.weights=runs/pretrain/exp/best.pt`` (same architecture as ``pretrain.model``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pretrain a CSPNet classifier on an ImageFolder dataset.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("Example::", 1)[1])
    parser.add_argument("config", help="config YAML with a pretrain: section")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. pretrain.epochs=10")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                        help="continue a run: its last.pt or run directory (default: the newest run)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    args = parser.parse_args(argv)

    from cspdet.config import ConfigError, load_config

    try:  # config errors first, before the heavy imports
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from cspdet.engine.classify import ClassifierTrainer
    from cspdet.engine.run import run_training_cli

    return run_training_cli(
        lambda: ClassifierTrainer(cfg, resume=args.resume, progress=not args.no_progress).fit(),
        lambda s: f"done: {s['epoch']} epochs, best top-1 {s['best_top1']:.2f}%, run {s['run_dir']}",
    )


if __name__ == "__main__":
    sys.exit(main())
