"""What every ``cspdet`` subcommand shares: config overrides anywhere on the line, parsers whose ``--help`` ends
with examples, and usage errors.

Overrides are taken out of the argument list *before* argparse sees it, so they may stand in any position
(before the config, between options, after ``--resume``)::

    cspdet train --no-progress model.name=cspdarknet_nano configs/demo.yaml train.epochs=3

A token is an override when it does not start with ``-``, holds ``=``, and its key is ``section.key`` (any
section: the config loader names a wrong one) or, Ultralytics-style, a bare key of one of the command's
sections (``epochs=3`` -> ``train.epochs=3`` for ``cspdet train``; the first section in the command's order
that has the key wins). Anything after ``--`` is never an override.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import textwrap
import typing
from collections.abc import Callable, Sequence


T = typing.TypeVar("T")

__all__ = ["UsageError", "make_parser", "run_reported", "split_overrides"]

_DOTTED = re.compile(r"^[A-Za-z_]\w*\.[A-Za-z_]\w*=")
_BARE = re.compile(r"^([A-Za-z_]\w*)=")


class UsageError(Exception):
    """A wrong command line (exit code 2); ``str(err)`` is the one-line message."""


def section_keys(section: str) -> set[str]:
    """The keys of config section ``section`` (``"train"`` -> ``{"epochs", "batch_size", ...}``)."""
    from ..config import Config

    cls = typing.get_type_hints(Config)[section]
    return {f.name for f in dataclasses.fields(cls)}


def split_overrides(argv: Sequence[str], sections: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """Separate ``section.key=value`` overrides from the other arguments, wherever they stand.

    Args:
        argv: the command's arguments (without the command name).
        sections: the config sections whose bare keys are accepted (``epochs=3``), in priority order; empty:
            only dotted keys are overrides.

    Returns:
        (the other arguments in their order, the overrides in their order with bare keys made dotted).
    """
    keys = [(s, section_keys(s)) for s in sections]
    rest: list[str] = []
    overrides: list[str] = []
    literal = False
    for token in argv:
        if literal or token.startswith("-"):
            literal = literal or token == "--"
            rest.append(token)
        elif _DOTTED.match(token):
            overrides.append(token)
        elif (bare := _BARE.match(token)) and (section := next((s for s, k in keys if bare[1] in k), None)):
            overrides.append(f"{section}.{token}")
        else:
            rest.append(token)
    return rest, overrides


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and the examples' line breaks; wider option column."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=110)


def make_parser(command: str, description: str, examples: str) -> argparse.ArgumentParser:
    """The parser of ``cspdet <command>``: ``--help`` shows ``description``, the options, then ``examples``."""
    return argparse.ArgumentParser(prog=f"cspdet {command}", description=textwrap.fill(description, 110),
                                   epilog="examples:\n" + examples.strip("\n"), formatter_class=_HelpFormatter)


def run_reported(prog: str, action: Callable[[], T]) -> tuple[T | None, int]:
    """Run ``action()`` with the commands' error convention: a full / read-only disk (``OutputError``) is one line
    and exit 1; a bad checkpoint, config, dataset or value one line and exit 2; Ctrl-C exit 130.

    Returns:
        ``(result, 0)``, or ``(None, exit code)`` after printing the line.
    """
    from ..config import ConfigError
    from ..data import DatasetError
    from ..runtime.checkpoint import CheckpointError
    from ..fileio import OutputError

    try:
        return action(), 0
    except OutputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return None, 1
    except (CheckpointError, ConfigError, DatasetError, ValueError) as err:
        print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return None, 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return None, 130


def add_fast_path_args(parser: argparse.ArgumentParser) -> None:
    """``--precision`` and ``--channels-last``: the PyTorch CPU fast path for a checkpoint; ``--precision`` also
    sets OpenVINO's inference precision for an ``.xml`` (ONNX / TorchScript files run as exported). See
    :mod:`cspdet.runtime.cpu` for what each measured."""
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                        help="CPU precision of a checkpoint or an OpenVINO .xml: fp32 (default, exact), auto = bf16 "
                        "only on CPUs with native bf16 (AMX / AVX512-BF16; scores move by ~1e-2), bf16 = always "
                        "(several times slower on CPUs without it)")
    parser.add_argument("--channels-last", action="store_true",
                        help="run the PyTorch model channels_last on the CPU (faster for most models; measure)")


def fast_path_kwargs(args: argparse.Namespace) -> dict[str, object]:
    """The fast-path options of ``args`` that differ from the default, as :func:`cspdet.runtime.open_model` keywords."""
    out: dict[str, object] = {}
    if args.precision != "fp32":
        out["precision"] = args.precision
    if args.channels_last:
        out["channels_last"] = True
    return out
