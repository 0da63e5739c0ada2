"""``cspdet predict``: detect objects in images, folders, glob patterns and videos with a cspdet checkpoint.

For each image it prints a summary line (``bus.jpg: 4 person, 1 bus (38 ms)``) and writes the image with
boxes, class names and scores drawn to ``--out`` (videos are written frame by frame to a video of the same
name). ``--save-json`` adds ``<name>.json`` (boxes xyxy in original pixels, score, class id and name);
``--save-txt`` adds ``labels/<name>.txt`` in YOLO format (``class cx cy w h``, normalised). An item that
cannot be read gets a one-line error and the others go on; the exit status is 1 if any item failed. A video
that yields fewer (or more) frames than its container declares, i.e. a truncated or damaged file, gets a
warning with both counts; with ``--strict`` it counts as failed. A full disk or a read-only ``--out`` stops
the run with one line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .args import add_fast_path_args, fast_path_kwargs, make_parser, split_overrides

__all__ = ["predict"]

PROG = "cspdet predict"
NO_WEIGHTS = (
    "no --weights given: predict needs a cspdet detector checkpoint (a training run's best.pt); train one with "
    "`cspdet train configs/demo.yaml` (writes runs/demo/shapes/best.pt), or convert official YOLOX weights with "
    "`cspdet convert yolox_s.pth --out yolox_s_cspdet.pt`"
)
YOLOX_WEIGHTS = (
    "{path}: this is an official YOLOX checkpoint; predict needs a cspdet detector checkpoint: convert it with "
    "`cspdet convert {path} --out converted.pt`, or fine-tune from it with "
    "`cspdet train configs/cspdarknet_yolo.yaml model.weights={path}`"
)
EXAMPLES = """
  cspdet predict bus.jpg --weights runs/train/exp/best.pt
  cspdet predict photos/ "more/*.png" clip.mp4 -w best.pt --conf 0.3 --save-json --save-txt
  cspdet predict datasets/shapes/images/val --weights runs/demo/shapes/best.pt --classes circle --out runs/circles

drawn images (and videos) go to --out (default runs/predict/<run name>, then <run name>-2, ...); --save-json
adds <name>.json (boxes xyxy in original pixels, score, class id, name, category id), --save-txt
labels/<name>.txt in YOLO format.
"""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The predict command line (options and sources in any order)."""
    from ..config import Range, range_type  # the ranges of the matching config fields (eval.conf, ...)

    rest, overrides = split_overrides(argv)
    parser = make_parser("predict", "Detect objects in images and videos.", EXAMPLES)
    parser.add_argument("source", nargs="+", help="image, folder, glob pattern (quoted) or video file")
    parser.add_argument("--weights", "-w", help="cspdet detector checkpoint (best.pt / last.pt of a run)")
    parser.add_argument("--conf", type=range_type("eval.conf"), default=None,
                        help="score threshold in [0, 1] (default: the checkpoint's, 0.25 for cspdet-trained models)")
    parser.add_argument("--iou", type=range_type("eval.iou"), default=None,
                        help="NMS IoU threshold in [0, 1] (default: the checkpoint's, 0.45 for cspdet-trained "
                        "models)")
    parser.add_argument("--img-size", type=range_type("eval.img_size"), nargs="+", default=None, metavar="N",
                        help="letterbox size: N or H W, multiples of 32 (default: the checkpoint's eval size)")
    parser.add_argument("--max-det", type=range_type("eval.max_det"), default=None,
                        help="detections kept per image (default: the checkpoint's, 300)")
    parser.add_argument("--classes", nargs="+", default=None, metavar="C",
                        help="keep only these classes (indices or names, e.g. --classes person 2)")
    parser.add_argument("--agnostic-nms", action="store_true", help="one NMS over all classes")
    parser.add_argument("--nms-free", action=argparse.BooleanOptionalAction, default=None,
                        help="models with a one-to-one branch (csptal_*, yolo26): --nms-free = its top-k, no NMS; "
                        "--no-nms-free = NMS on the one-to-many branch; default: the checkpoint's mode (small_scratch: "
                        "NMS)")
    parser.add_argument("--rect", action=argparse.BooleanOptionalAction, default=True,
                        help="--rect (default): pad each image only to the next multiple of 32 (a 640x480 photo "
                        "runs at 480x640; faster); --no-rect: the full --img-size square, as evaluation does "
                        "(static exports always use their size)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: runs/predict/<run name>, numbered per call: -2, -3, ...)")
    parser.add_argument("--save-json", action="store_true", help="write <name>.json with the detections")
    parser.add_argument("--save-txt", action="store_true", help="write labels/<name>.txt in YOLO format")
    parser.add_argument("--save-conf", action="store_true", help="append the score to each --save-txt line")
    parser.add_argument("--no-save", action="store_true", help="do not write drawn images / videos")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto: a GPU if any)")
    add_fast_path_args(parser)
    parser.add_argument("--batch", type=range_type(Range(1, 1024), int), default=8, metavar="N",
                        help="images (or video frames) per forward pass (default 8; 1 = lowest latency per item)")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 1) on a video that yields fewer or more frames than its container "
                        "declares (default: a warning)")
    if overrides:
        parser.error(f"{overrides[0]}: predict takes options, not config overrides (e.g. --conf 0.3; see --help)")
    return parser.parse_intermixed_args(rest)


class _Outputs:
    """Where the files of one source item go; names stay unique when two folders hold the same file name."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.used: set[str] = set()

    def stem(self, path: Path) -> str:
        """A stem for ``path`` that no earlier item used."""
        stem, n = path.stem, 1
        while stem in self.used:
            n += 1
            stem = f"{path.stem}_{n}"
        self.used.add(stem)
        return stem


def detect_images(predictor: Any, paths: list[Path], args: argparse.Namespace, outputs: _Outputs) -> int:
    """Predict ``paths`` in one batch (``predictor.batch_size`` per forward pass) and write each result; an image
    that cannot be read makes the batch go one by one, so that only it fails. Returns the number of failures."""
    from ..data import ImageReadError
    from ..fileio import OutputError

    results: list[Any] = [None] * len(paths)
    if len(paths) > 1:
        try:
            results = predictor([str(p) for p in paths])
        except (ImageReadError, OSError, ValueError):
            pass  # one by one below, so the error names its image and the others still run
    failed = 0
    for path, res in zip(paths, results):
        try:
            if res is None:
                (res,) = predictor([str(path)])
            write_image_result(res, path, args, outputs)
        except OutputError:  # a full / read-only disk fails every item alike: the caller stops
            raise
        except (ImageReadError, OSError, ValueError) as err:
            report_failure(path, err)
            failed += 1
    return failed


def report_failure(path: Path, err: Exception) -> None:
    msg = str(err) if str(path) in str(err) else f"{path}: {err}"
    print(f"{PROG}: error: {' '.join(msg.split())}", file=sys.stderr)


def write_image_result(res: Any, path: Path, args: argparse.Namespace, outputs: _Outputs) -> None:
    """Write what was asked for of one image's ``Results`` and print its summary line."""
    import cv2

    from ..fileio import atomic_write

    stem = outputs.stem(path)
    if not args.no_save:
        suffix = path.suffix.lower() if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp") else ".jpg"
        ok, encoded = cv2.imencode(suffix, res.plot(bgr=True))
        if not ok:
            raise OSError(f"{outputs.out / (stem + suffix)}: OpenCV could not encode the image")
        atomic_write(outputs.out / f"{stem}{suffix}", encoded.tobytes())
    if args.save_json:
        atomic_write(outputs.out / f"{stem}.json", res.to_json())
    if args.save_txt:
        atomic_write(outputs.out / "labels" / f"{stem}.txt", res.to_txt(with_conf=args.save_conf))
    print(f"{path.name}: {res.summary()} ({res.speed_ms:.0f} ms)", flush=True)


def detect_video(predictor: Any, path: Path, args: argparse.Namespace, outputs: _Outputs) -> int:
    """Predict every frame of a video, write what was asked for; returns the number of frames."""
    import cv2

    from ..fileio import atomic_write

    stem = outputs.stem(path)
    writer = None
    partial = target = None
    frames_json = []
    total = 0
    try:
        cap = cv2.VideoCapture(str(path))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
        cap.release()
        # a frame count that differs from the container's is a warning, or with --strict an error
        for res in predictor.predict_video(path, strict=args.strict):
            total += 1
            if not args.no_save:
                if writer is None:
                    suffix = ".avi" if path.suffix.lower() == ".avi" else ".mp4"
                    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if suffix == ".avi" else "mp4v"))
                    h, w = res.orig_size
                    target = outputs.out / f"{stem}{suffix}"
                    # written under a temporary name (OpenCV picks the container from the suffix), renamed
                    # when complete: an interrupted run never leaves a half video under the real name
                    partial = outputs.out / f".{stem}.partial{suffix}"
                    writer = cv2.VideoWriter(str(partial), fourcc, predictor.video_fps(path), (w, h))
                    if not writer.isOpened():
                        raise OSError(f"{target}: OpenCV cannot write this video")
                writer.write(res.plot(bgr=True))
            if args.save_json:
                frames_json.append(res.to_dict())
            if args.save_txt:
                atomic_write(outputs.out / "labels" / f"{stem}_{res.frame}.txt",
                             res.to_txt(with_conf=args.save_conf))
            of = f"/{count}" if count > 0 else ""
            print(f"{path.name} frame {res.frame + 1}{of}: {res.summary()} ({res.speed_ms:.0f} ms)", flush=True)
        if writer is not None:
            writer.release()
            writer = None
            os.replace(partial, target)
    finally:
        if writer is not None:
            writer.release()
        if partial is not None:
            partial.unlink(missing_ok=True)
    if args.save_json:
        atomic_write(outputs.out / f"{stem}.json", json.dumps({"video": str(path), "frames": frames_json}, indent=2))
    return total


def predict(argv: Sequence[str]) -> int:
    """``cspdet predict SOURCE ... --weights W``; returns the exit code (2 usage / checkpoint, 1 failed items)."""
    # FFmpeg (inside OpenCV) prints its own lines, e.g. "moov atom not found", for a broken video; each bad
    # item should give exactly one line of ours. Must be set before OpenCV opens its first video.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    # OpenCV's own warnings too ("[ WARN:0@4.6] global cap_ffmpeg_impl.hpp ... Unable to read codec parameters")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    args = parse_args(argv)
    from ..config import ConfigError
    from ..data import ImageReadError
    from ..runtime.checkpoint import CheckpointError
    from ..runtime.open import NotAModelError
    from ..runtime.predictor import Predictor, expand_source, is_video
    from ..fileio import OutputError, make_dirs

    if not args.weights:
        print(f"{PROG}: error: {NO_WEIGHTS}", file=sys.stderr)
        return 2
    kwargs: dict[str, Any] = {"conf": args.conf, "iou": args.iou, "max_det": args.max_det,
                              "agnostic": args.agnostic_nms, "nms_free": args.nms_free, "rect": args.rect}
    if args.img_size:
        if len(args.img_size) > 2:
            print(f"{PROG}: error: --img-size takes N or H W, got {len(args.img_size)} numbers", file=sys.stderr)
            return 2
        kwargs["img_size"] = args.img_size[0] if len(args.img_size) == 1 else tuple(args.img_size)
    from ..runtime.device import select_device

    try:
        device = select_device(args.device)
    except RuntimeError as err:
        print(f"{PROG}: error: --device {args.device}: {str(err).split(' (use ')[0]}", file=sys.stderr)
        return 2
    try:
        predictor = Predictor.from_checkpoint(args.weights, device=device, batch_size=args.batch, **kwargs,
                                              **fast_path_kwargs(args))
        if args.classes:
            predictor.classes = predictor.resolve_classes(args.classes)
    except (CheckpointError, ConfigError, ValueError, RuntimeError) as err:
        # RuntimeError: e.g. an unavailable --device
        yolox = isinstance(err, NotAModelError) and err.kind == "yolox"
        msg = YOLOX_WEIGHTS.format(path=args.weights) if yolox else " ".join(str(err).split())
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    predictor.warmup()  # keeps one-off setup out of the first image's "(N ms)"
    from .val import numbered_dir, val_dir_name

    try:
        out = make_dirs(args.out) if args.out else numbered_dir(Path("runs") / "predict", val_dir_name(args.weights))
    except OutputError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    outputs = _Outputs(out)

    n_images = n_frames = n_failed = 0
    for source in args.source:
        try:
            items = expand_source(source)
        except FileNotFoundError as err:
            print(f"{PROG}: error: {err}", file=sys.stderr)
            n_failed += 1
            continue
        if not items:
            print(f"{PROG}: error: {source}: folder has no images or videos", file=sys.stderr)
            n_failed += 1
            continue
        # consecutive images go in batches of --batch (one forward pass each); a video is a batch of its own
        groups: list[list[Path]] = []
        for path in items:
            if is_video(path) or not groups or is_video(groups[-1][0]) or len(groups[-1]) >= args.batch:
                groups.append([path])
            else:
                groups[-1].append(path)
        for group in groups:
            try:
                if is_video(group[0]):
                    n_frames += detect_video(predictor, group[0], args, outputs)
                else:
                    failed = detect_images(predictor, group, args, outputs)
                    n_images += len(group) - failed
                    n_failed += failed
            except OutputError as err:  # disk full, read-only --out: the next items would fail the same way
                print(f"{PROG}: error: {err}", file=sys.stderr)
                return 1
            except (ImageReadError, OSError, ValueError) as err:
                report_failure(group[0], err)
                n_failed += 1
            except KeyboardInterrupt:
                print(f"{PROG}: interrupted", file=sys.stderr)
                return 130
    parts = [f"{n_images} image{'s' * (n_images != 1)}"]
    if n_frames:
        parts.append(f"{n_frames} video frame{'s' * (n_frames != 1)}")
    if n_failed:
        parts.append(f"{n_failed} failed")
    where = "" if args.no_save and not (args.save_json or args.save_txt) else f"; results in {out}{os.sep}"
    print(f"done: {', '.join(parts)}{where}")
    return 1 if n_failed else 0
