#!/usr/bin/env python
"""COCO mAP of a checkpoint or of a detections file: ``python tools/eval.py WEIGHTS [CONFIG] [overrides]``
or ``--ann GT.json --results DETS.json``.

Alias of ``cspdet val`` (same options; ``cspdet val --help`` lists them with examples).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from cspdet.cli import alias

main = alias("val")

if __name__ == "__main__":
    sys.exit(main())
