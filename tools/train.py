#!/usr/bin/env python
"""Train a detector: ``python tools/train.py CONFIG [section.key=value ...] [--resume [PATH]]``.

Alias of ``cspdet train`` (same options; ``cspdet train --help`` lists them with examples).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from cspdet.cli import alias

main = alias("train")

if __name__ == "__main__":
    sys.exit(main())
