#!/usr/bin/env python
"""Convert an official YOLOX checkpoint into a cspdet detector checkpoint.

    python tools/convert_yolox.py yolox_s.pth --model cspdarknet_s --out yolox_s_cspdet.pt
    python tools/detect.py image.jpg --weights yolox_s_cspdet.pt
    python tools/eval.py configs/cspdarknet_yolo.yaml --weights yolox_s_cspdet.pt

YOLOX-{nano,tiny,s,m,l,x} map to cspdet's cspdarknet_{nano,tiny,s,m,l,x}; the layers are the same, the stem is
permuted so cspdet's RGB input gives YOLOX's BGR results. Class names and ids are COCO's 80 by default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> int:
    from cspdet.config import range_type

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("yolox", help="YOLOX checkpoint (.pth) as released by YOLOX")
    parser.add_argument("--model", default="cspdarknet_s", help="matching cspdet preset (default cspdarknet_s)")
    parser.add_argument("--out", required=True, help="cspdet checkpoint to write")
    parser.add_argument("--img-size", type=range_type("eval.img_size"), default=None, help="inference size (default 416 nano/tiny, else 640)")
    parser.add_argument("--names", nargs="+", default=None, help="class names for a non-COCO YOLOX model")
    args = parser.parse_args(argv)

    from cspdet.config import ConfigError
    from cspdet.engine.build import convert_yolox_checkpoint
    from cspdet.engine.checkpoint import CheckpointError

    try:
        ckpt = convert_yolox_checkpoint(args.yolox, args.out, args.model, args.img_size, args.names)
    except (CheckpointError, ConfigError) as err:
        print(f"convert_yolox: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {args.model}, {len(ckpt['meta']['class_names'])} classes, "
          f"img_size {ckpt['meta']['img_size'][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
