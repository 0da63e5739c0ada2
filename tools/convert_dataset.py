#!/usr/bin/env python
"""Convert a dataset between COCO, YOLO and VOC: ``python tools/convert_dataset.py DATASET --to yolo --out DIR``.

Alias of ``cspdet convert`` (same options; ``cspdet convert --help`` lists them with examples).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from cspdet.cli import alias

main = alias("convert")

if __name__ == "__main__":
    sys.exit(main())
