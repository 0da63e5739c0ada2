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
    from cspdet.engine.checkpoint import CheckpointError
    from cspdet.engine.classify import ClassifierTrainer
    from cspdet.engine.distributed import destroy_distributed, env_dist_info
    from cspdet.engine.trainer import NonFiniteLossError, ResumeError, RunFinished

    try:
        summary = ClassifierTrainer(cfg, resume=args.resume, progress=not args.no_progress).fit()
    except RunFinished as err:
        print(err, file=sys.stderr)
        return 0
    except (ConfigError, CheckpointError, ResumeError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    except KeyboardInterrupt:
        print("interrupted: resume with --resume (continues from the last saved epoch)", file=sys.stderr)
        return 130
    finally:
        destroy_distributed()
    if env_dist_info().is_main:
        print(f"done: {summary['epoch']} epochs, best top-1 {summary['best_top1']:.2f}%, run {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
