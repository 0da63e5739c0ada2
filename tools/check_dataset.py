#!/usr/bin/env python
"""Dataset doctor, every problem in one pass: ``python tools/check_dataset.py DATASET``.

Alias of ``cspdet check`` (same options; ``cspdet check --help`` lists them with examples).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from cspdet.cli import alias

main = alias("check")

if __name__ == "__main__":
    sys.exit(main())
