#!/usr/bin/env python
"""Export a checkpoint to ONNX / OpenVINO / TorchScript (with its metadata; --int8): alias of ``cspdet export`` (same options; ``cspdet export --help``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from cspdet.cli import alias

main = alias("export")

if __name__ == "__main__":
    sys.exit(main())
