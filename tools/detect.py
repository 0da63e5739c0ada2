#!/usr/bin/env python
"""Detect objects in images, folders, globs and videos: ``python tools/detect.py SOURCE --weights W``.

Alias of ``cspdet predict`` (same options; ``cspdet predict --help`` lists them with examples).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from cspdet.cli import alias

main = alias("predict")

if __name__ == "__main__":
    sys.exit(main())
