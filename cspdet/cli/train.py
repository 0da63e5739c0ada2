"""``cspdet train`` and ``cspdet pretrain``: a detection run, a backbone classification run (``--resume`` either)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from .args import make_parser, split_overrides

__all__ = ["pretrain", "train"]

TRAIN_EXAMPLES = """
  cspdet train configs/demo.yaml                                   # the make-demo model on the shapes dataset
  cspdet train configs/cspdarknet_yolo.yaml train.batch_size=16 train.epochs=100
  cspdet train --no-progress model.name=cspdarknet_nano configs/cspdarknet_yolo.yaml   # overrides anywhere
  cspdet train configs/demo.yaml epochs=10 batch_size=16           # bare keys: train, then model, data, eval
  cspdet train configs/finetune.yaml model.weights=best.pt model.name=csptal_n train.freeze=backbone  # fine-tune
  cspdet train --resume                                            # continue the newest run under runs/train
  cspdet train --resume runs/train/exp eval.batch_size=4           # a given run (its own config is used)
  torchrun --nproc_per_node=8 -m cspdet.cli train configs/cspdarknet_yolo.yaml   # DDP: global batch split

outputs (one run directory, runs/train/<name>): config.yaml, last.pt, best.pt, results.csv, TensorBoard
events, eval/. Overrides are section.key=value (values are YAML: data.img_size=[512,512]).
"""

PRETRAIN_EXAMPLES = """
  cspdet pretrain configs/pretrain_cspresnet50.yaml pretrain.data=/data/imagenet pretrain.epochs=90
  cspdet pretrain configs/pretrain_cspdarknet_s.yaml epochs=10 batch_size=64   # bare keys of pretrain:
  cspdet pretrain CONFIG --resume runs/pretrain/exp/last.pt
  torchrun --nproc_per_node=8 -m cspdet.cli pretrain CONFIG       # global pretrain.batch_size over 8 processes

The config's pretrain: section picks the model (any CSPNet preset or custom stage_defs) and the ImageFolder data
(<data>/train/<class>/*.jpg, <data>/val/<class>/*.jpg). Then initialise a detector's backbone with it:
  cspdet train DET_CONFIG model.name=cspdarknet_s model.weights=runs/pretrain/exp/best.pt
"""


def _run_args(command: str, description: str, examples: str, argv: Sequence[str],
              sections: Sequence[str]) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    """Parse ``CONFIG [overrides] [--resume [PATH]] [--no-progress]`` in any order."""
    rest, overrides = split_overrides(argv, sections)
    parser = make_parser(command, description, examples)
    parser.add_argument("config", nargs="?", help="config YAML (optional with --resume: the run's own config)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                        help="continue a run: its last.pt or run directory (default: the newest run)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars (e.g. for log files)")
    args = parser.parse_args(rest)
    args.overrides = overrides
    # "--resume configs/x.yaml" would otherwise take the config as the checkpoint path.
    if isinstance(args.resume, str) and args.resume.endswith((".yaml", ".yml")):
        if args.config is not None:
            parser.error(f"two configs: {args.resume} and {args.config}")
        args.config, args.resume = args.resume, True
    return args, parser


def train(argv: Sequence[str]) -> int:
    """``cspdet train CONFIG [section.key=value ...] [--resume [PATH]] [--no-progress]``; returns the exit code."""
    args, parser = _run_args("train", "Train a cspdet detector.", TRAIN_EXAMPLES, argv,
                             ("train", "model", "data", "eval"))
    if args.config is None and args.resume is None:
        parser.error("a CONFIG is required (or --resume to continue a run)")
    from ..config import ConfigError, load_config

    if args.config is not None:
        try:  # config errors first, before the heavy imports: a typo answers instantly
            cfg = load_config(args.config, args.overrides)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    from ..engine.run import run_training_cli
    from ..engine.trainer import Trainer

    def fit() -> dict[str, Any]:
        if args.config is None:
            run_cfg, path = _resume_config(args.resume, args.overrides)
            return Trainer(run_cfg, resume=path, progress=not args.no_progress).fit()
        return Trainer(cfg, resume=args.resume, progress=not args.no_progress).fit()

    return run_training_cli(fit, lambda s: f"done: {s['epoch']} epochs, best AP {s['best_ap']:.4f}, run {s['run_dir']}")


def _resume_config(resume: str | bool, overrides: Sequence[str]) -> tuple[Any, Any]:
    """``--resume`` without a CONFIG: the run's own config (stored in its checkpoint) plus ``overrides``
    (the trainer refuses those that would change the trained weights); and the checkpoint path."""
    from ..config import config_from_dict, config_to_dict, load_config, parse_override
    from ..runtime.checkpoint import load_checkpoint
    from ..engine.run import find_resume_checkpoint
    from ..engine.trainer import config_from_checkpoint

    base = load_config(None, overrides)  # checks the overrides, and gives train.output_dir to search
    path = find_resume_checkpoint(resume, base.train.output_dir)
    run_cfg = config_from_checkpoint(load_checkpoint(path, kind="detector"), path)
    if overrides:
        raw = config_to_dict(run_cfg)
        for text in overrides:
            key, value = parse_override(text)
            section, _, name = key.partition(".")
            raw.setdefault(section, {})[name] = value
        run_cfg = config_from_dict(raw, source="on the command line")
    return run_cfg, path


def pretrain(argv: Sequence[str]) -> int:
    """``cspdet pretrain CONFIG [section.key=value ...] [--resume [PATH]] [--no-progress]``."""
    args, parser = _run_args("pretrain", "Pretrain a CSPNet backbone as a classifier on an ImageFolder dataset.",
                             PRETRAIN_EXAMPLES, argv, ("pretrain",))
    if args.config is None:
        parser.error("a CONFIG with a pretrain: section is required")
    from ..config import ConfigError, load_config

    try:  # config errors first, before the heavy imports
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from ..engine.classify import ClassifierTrainer
    from ..engine.run import run_training_cli

    return run_training_cli(
        lambda: ClassifierTrainer(cfg, resume=args.resume, progress=not args.no_progress).fit(),
        lambda s: f"done: {s['epoch']} epochs, best top-1 {s['best_top1']:.2f}%, run {s['run_dir']}",
    )
