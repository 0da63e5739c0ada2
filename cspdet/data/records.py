"""What every annotation reader produces (:class:`ImageRecord`, one per usable image; :class:`Sample`, a decoded
one) and the checks they share (numbers, boxes against their image, stable ids)."""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sized
from typing import Any, Callable, Iterable

import numpy as np

from .._deprecated import moved
from .problems import DatasetWarning, ProblemReport, user_stacklevel

__all__ = [
    "BOX_TOLERANCE_PX",
    "ImageRecord",
    "Sample",
    "drop_duplicate_boxes",
    "inside_folder",
    "is_file",
]

# A box may stick out of its image by this much (annotation tools round) before it counts as a problem;
# it is clipped either way.
BOX_TOLERANCE_PX = 1.0


@dataclass
class Sample:
    """One decoded image with its training targets.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        boxes: (N, 4) float32 xyxy in pixels of ``image``.
        labels: (N,) int64 contiguous class indices.
        image_id: the dataset's image id (COCO: the original id).
        path: image file.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image_id: int
    path: str


@dataclass
class ImageRecord:
    """What a reader knows about one image before decoding it.

    ``boxes`` are xyxy pixels, or xyxy fractions of the image size when ``normalized`` (YOLO).
    ``ignore_boxes``/``ignore_labels`` are crowd (COCO) or difficult (VOC) boxes: not trained on, but part
    of the evaluation ground truth. ``height``/``width`` are None when the format does not store them.
    ``ann_ids`` are the original COCO annotation ids (None for other formats).
    """

    path: str
    image_id: int
    boxes: np.ndarray
    labels: np.ndarray
    height: int | None = None
    width: int | None = None
    normalized: bool = False
    ignore_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    ignore_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    ann_ids: list[int] | None = None
    ignore_ann_ids: list[int] | None = None
    coco_anns: list[dict[str, Any]] | None = None
    """COCO only: the valid original annotations (without segmentation), kept verbatim for coco_gt() so
    that evaluation uses the json's own ``area`` (COCO's small/medium/large split) and exact boxes."""


def _empty_boxes() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)


# ======================================================================================== shared checks


NAME_MAX = 255  # bytes in one path component on every common file system (ext4, xfs, btrfs, NTFS, APFS)


def is_file(path: str | os.PathLike) -> bool:
    """``Path(path).is_file()`` that answers False instead of raising for a path the OS refuses to look at
    (a name too long, a folder without search permission, a NUL byte): the readers then report the image as
    not found, naming it, instead of stopping with a traceback."""
    try:
        return os.path.isfile(path)
    except (OSError, ValueError):
        return False


def plain_file_name(name: Any) -> bool:
    """True for a file name without folders (``x.jpg``): inside any folder by construction, and short enough
    for every file system (at most 4 bytes per character)."""
    return (type(name) is str and name not in ("", ".", "..") and os.sep not in name and "\x00" not in name
            and (os.altsep is None or os.altsep not in name) and len(name) <= NAME_MAX // 4)  # fmt: skip


def inside_folder(
    folder: Path, name: Any, where: str, report: ProblemReport, allow_outside: bool = False
) -> Path | None:
    """``folder / name`` for an image path taken from an annotation file (COCO ``file_name``, a line of a YOLO
    image list, VOC ``<filename>``), or None (reported as ``path_outside_dataset``) when it leads outside
    ``folder``: a ``..`` that climbs out of it, or an absolute path elsewhere.

    Why: an annotation file is data, and data must not make training read arbitrary files
    (``../../../../etc/passwd``). The check is lexical (no file system access, symlinks inside the dataset are
    the user's own choice); ``allow_outside`` (the descriptor's ``allow_outside: true``) switches it off. Paths
    the descriptor itself gives (a split's image folder, absolute or not) are not checked: the user wrote them.

    Raises (via ``report``): nothing in the default mode; :class:`DatasetError` in strict mode.
    """
    if plain_file_name(name):  # the common case, without normalising two paths per image
        return Path(folder, name)
    if not isinstance(name, (str, os.PathLike)) or "\x00" in os.fspath(name):
        report.add("bad_image_entry", where, f"image path must be a file name, got {name!r:.80}")
        return None
    longest = max((len(os.fsencode(part)) for part in Path(name).parts), default=0)
    if longest > NAME_MAX:  # the OS would answer ENAMETOOLONG to every look at it
        report.add("bad_image_entry", where, f"image path {os.fspath(name)!r:.60} has a name of {longest} bytes "
                   f"(file systems allow {NAME_MAX})")
        return None
    path = Path(folder) / name
    base = os.path.normpath(os.path.abspath(folder))
    norm = os.path.normpath(os.path.abspath(path))
    if norm != base and allow_outside:
        return path
    if norm == base:  # "", ".", "x/..": the folder itself
        report.add("bad_image_entry", where, f"image path {os.fspath(name)!r:.60} names the image folder itself, "
                   "not an image file")
        return None
    if not norm.startswith(base.rstrip(os.sep) + os.sep):
        report.add(
            "path_outside_dataset", where,
            f"image path {os.fspath(name)!r:.120} leads outside the dataset's image folder {folder}; not read "
            "(set 'allow_outside: true' in the dataset descriptor if it is meant)",
        )  # fmt: skip
        return None
    return path


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    """An integer that fits int64 (ids end up in tensors and numpy arrays; 10**40 would overflow there)."""
    return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63


def _check_box(
    box: list[float], width: float | None, height: float | None, source: str, report: ProblemReport
) -> list[float] | None:

    """Validate an xyxy box (pixels, or fractions when width=height=1); returns the clipped box or None."""
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        report.add("bad_box", source, f"box {_fmt(box)} has a NaN or infinite coordinate")
        return None
    if x2 <= x1 or y2 <= y1:
        report.add("bad_box", source, f"box {_fmt(box)} has zero or negative width/height")
        return None
    if width is None or height is None:
        return [x1, y1, x2, y2]
    tol = BOX_TOLERANCE_PX if width > 1 else 1e-3  # 1 px, or 0.1% of a normalised side
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    # normalised (YOLO) boxes are checked against the unit square: say so instead of "a [1, 1] image"
    frame = f"{_fmt([width, height])} image" if width > 1 else "image (normalised coordinates must lie in 0..1)"
    if cx2 <= cx1 or cy2 <= cy1:
        report.add("box_outside_image", source, f"box {_fmt(box)} lies outside the {frame}")
        return None
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        report.add("box_clipped", source, f"box {_fmt(box)} extends outside the {frame}")
    return [cx1, cy1, cx2, cy2]


def _fmt(values: Iterable[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" if _is_number(v) else repr(v) for v in values) + "]"


def _stable_image_ids(paths: list[str]) -> list[int]:
    """Image ids from file stems when they are all numeric (``000000000139`` -> 139, VOC ``2008_000008`` ->
    2008000008) and unique, so ids survive format conversions; else 1..N in the given order."""
    ids = []
    for p in paths:
        stem = Path(p).stem
        if not re.fullmatch(r"[0-9][0-9_]*", stem) or len(stem.replace("_", "")) > 18:
            return list(range(1, len(paths) + 1))
        ids.append(int(stem.replace("_", "")))
    if len(set(ids)) != len(ids):
        return list(range(1, len(paths) + 1))
    return ids


def _duplicates(counts: np.ndarray, labels: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows that repeat an earlier row of the same image with the same class and box, the row each repeats),
    over boxes stored image after image (``counts`` per image). One ``np.unique``, no per-box Python loop."""
    total = int(counts.sum())
    if total < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows = np.empty((total, 6), np.float64)  # image, class, x1, y1, x2, y2: exact (float32 -> float64)
    rows[:, 0] = np.repeat(np.arange(len(counts)), counts)
    rows[:, 1] = labels.reshape(-1)
    rows[:, 2:] = boxes.reshape(-1, 4)
    # return_index gives the first occurrence (numpy sorts stably when it is asked for)
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    original = first[inverse.reshape(-1)]
    dup = np.flatnonzero(original != np.arange(total))
    return dup, original[dup]


def _duplicate_message(label: int, box: list[float], j0: int) -> str:
    return f"same class ({label}) and box {_fmt(box)} as box {j0} of the same image; the repeat is not trained on"


def drop_duplicate_boxes(
    records: list[ImageRecord], report: ProblemReport, where: Callable[[ImageRecord, int], str] | None = None
) -> int:
    """Remove training boxes that repeat an earlier box of the same image with the same class and the same
    coordinates, reporting each as ``duplicate_box`` (named by ``where(record, box index)``, default the image
    file and box index). Returns how many were removed.

    Why: a repeated box is a labelling or export bug (one object, several targets: the assigner then pulls
    several predictions onto it), and thousands of them in one image would otherwise pass unnoticed. Found with
    one ``np.unique`` over every box of the split (no per-box Python loop); only the duplicates are visited to
    report them. Crowd / difficult boxes are left as they are, and so is a COCO file's own ground truth used for
    scoring (``coco_anns``: evaluation scores the json as given); only the training targets lose the repeats.
    (:func:`~cspdet.data.record_table.drop_duplicate_boxes_table` is the same for a table.)
    """
    counts = np.fromiter((len(r.labels) for r in records), np.int64, len(records))
    if int(counts.sum()) < 2:
        return 0
    labels = np.concatenate([r.labels.reshape(-1) for r in records])
    boxes = np.concatenate([r.boxes.reshape(-1, 4) for r in records])
    dup, original = _duplicates(counts, labels, boxes)
    if not len(dup):
        return 0
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    image_of = np.repeat(np.arange(len(records)), counts)
    drop: dict[int, list[int]] = {}
    for k, k0 in zip(dup.tolist(), original.tolist()):
        i = int(image_of[k])
        rec, j, j0 = records[i], k - int(starts[i]), k0 - int(starts[i])
        source = where(rec, j) if where is not None else f"{rec.path} box {j}"
        report.add("duplicate_box", source, _duplicate_message(int(rec.labels[j]), rec.boxes[j].tolist(), j0))
        drop.setdefault(i, []).append(j)
    for i, js in drop.items():
        rec = records[i]
        keep = np.ones(len(rec.labels), bool)
        keep[js] = False
        rec.boxes, rec.labels = rec.boxes[keep], rec.labels[keep]
        if rec.ann_ids is not None:
            rec.ann_ids = [a for a, k in zip(rec.ann_ids, keep.tolist()) if k]
    return len(dup)


def _finish(records: Sized, report: ProblemReport, what: str) -> None:
    """Report an empty split and warn the problems of ``records`` (a list of records or a record table)."""
    if not records:
        report.add("empty_dataset", what, "no usable images" + (f" ({report.summary()})" if report else ""))
    if report:
        warnings.warn(
            report.summary(hint="dataset.skipped, or `cspdet check DATASET` for the full list"),
            DatasetWarning,
            stacklevel=user_stacklevel(),
        )


# the table version lives with the table (it needed RecordTable, which imports this module)
__getattr__ = moved(__name__, {"drop_duplicate_boxes_table": "cspdet.data.record_table"})
