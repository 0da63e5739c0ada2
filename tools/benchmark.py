#!/usr/bin/env python
"""Size, mAP and latency of a model in every format on this machine: alias of ``cspdet benchmark`` (same options; ``cspdet benchmark --help``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from cspdet.cli import alias

main = alias("benchmark")

if __name__ == "__main__":
    sys.exit(main())
