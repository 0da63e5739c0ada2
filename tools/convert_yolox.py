#!/usr/bin/env python
"""Convert an official YOLOX checkpoint into a cspdet detector checkpoint:
``python tools/convert_yolox.py yolox_s.pth --out yolox_s_cspdet.pt [--model cspdarknet_s]``.

Alias of ``cspdet convert --from yolox`` (``--model`` is optional: the size is read from the weights).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from cspdet.cli import main as cspdet


def main(argv: list[str] | None = None) -> int:
    """``cspdet convert --from yolox`` with these arguments (default: the command line)."""
    return cspdet(["convert", "--from", "yolox", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
