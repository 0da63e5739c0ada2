#!/usr/bin/env python
"""Pretrain a CSPNet backbone as a classifier: ``python tools/pretrain.py CONFIG [overrides]``.

Alias of ``cspdet pretrain`` (same options; ``cspdet pretrain --help`` lists them with examples).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from cspdet.cli import alias

main = alias("pretrain")

if __name__ == "__main__":
    sys.exit(main())
