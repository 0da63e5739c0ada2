"""The ``cspdet`` command: one entry point for everything a user runs.

    cspdet train|val|predict|pretrain|check|convert ...     (cspdet COMMAND --help: options and examples)

Installed as a console script (``[project.scripts]`` in pyproject.toml); ``python -m cspdet.cli`` is the same
command, and ``tools/{train,eval,detect,pretrain,check_dataset,convert_dataset,convert_yolox}.py`` are aliases
of its subcommands. Config overrides (``section.key=value``) are accepted in any position (see
:mod:`cspdet.cli.args`). Exit codes: 0 success, 1 a failed run (or, for ``check``, a dataset with problems),
2 a usage, config or checkpoint error, 130 interrupted.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Sequence

__all__ = ["COMMANDS", "alias", "main"]

#: command -> (module in cspdet.cli, function, one-line summary). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("train", "train", "train a detector: CONFIG [section.key=value ...] [--resume [RUN]]"),
    "val": ("val", "val", "COCO mAP of a checkpoint (on the dataset it was trained on) or of a detections file"),
    "predict": ("predict", "predict", "detect objects in images, folders, globs and videos"),
    "pretrain": ("train", "pretrain", "pretrain a CSPNet backbone as an ImageFolder classifier"),
    "check": ("dataset", "check", "report every problem of a dataset, with class statistics"),
    "convert": ("dataset", "convert", "convert a dataset (COCO / YOLO / VOC) or YOLOX weights (to cspdet)"),
    "export": ("export", "export", "export a checkpoint to ONNX / OpenVINO / TorchScript (metadata inside; --int8)"),
    "benchmark": ("benchmark", "benchmark", "file size, mAP and latency of a model in every format, on this machine"),
}

USAGE = """usage: cspdet COMMAND [ARGS ...]     (cspdet COMMAND --help for its options and examples)

commands:
{commands}

examples:
  cspdet train configs/demo.yaml train.epochs=10          # overrides section.key=value in any position
  cspdet val runs/demo/shapes/best.pt                      # the checkpoint knows its model and dataset
  cspdet predict datasets/shapes/images/val --weights runs/demo/shapes/best.pt --save-json
  cspdet check datasets/coco128.yaml
  cspdet convert datasets/coco128.yaml --to yolo --out datasets/coco128_yolo
  cspdet export runs/demo/shapes/best.pt --format onnx --dynamic
"""


def _usage() -> str:
    return USAGE.format(commands="\n".join(f"  {name:<9} {summary}" for name, (_, _, summary) in COMMANDS.items()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cspdet COMMAND ARGS``; ``argv`` defaults to ``sys.argv[1:]``. Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"cspdet {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f"; did you mean {close[0]}?" if close else f" (commands: {', '.join(COMMANDS)})"
        print(f"cspdet: error: unknown command {command!r}{hint}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[command]
    from importlib import import_module

    run: Callable[[Sequence[str]], int] = getattr(import_module(f"{__name__}.{module}"), function)
    return run(rest)


def alias(command: str) -> Callable[[Sequence[str] | None], int]:
    """``main`` of a ``tools/*.py`` alias: ``alias("train")(argv)`` = ``cspdet train argv`` (default
    ``sys.argv[1:]``)."""

    def run(argv: Sequence[str] | None = None) -> int:
        return main([command, *(sys.argv[1:] if argv is None else argv)])

    run.__doc__ = f"``cspdet {command}`` with these arguments (default: the command line); returns the exit code."
    return run
