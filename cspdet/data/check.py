"""Dataset doctor: find every problem of a dataset in one pass and describe what is in it.

Used by ``cspdet check``. Unlike training, which skips bad input lazily, the doctor reads each
split non-strictly (collecting every annotation problem), then verifies every image (missing, unreadable,
truncated, size mismatches), and for YOLO lists label files without an image. Images are verified from their
headers (:func:`~cspdet.data.image_io.verify_image`, no pixel decoding) unless ``full_decode``, in a thread
pool sized to the free cores. It also gathers class and
box-size statistics, so a user can see at a glance that the labels are what they think.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import progress_bar
from .datasets import DetectionDataset, build_dataset, load_descriptor
from .image_io import IMAGE_SUFFIXES, ImageReadError, read_image, verify_image
from .problems import PROBLEM_KINDS, DatasetError, DatasetProblem, ProblemReport
from .yolo_format import yolo_label_path

__all__ = ["SplitReport", "check_dataset", "descriptor_for_folder", "format_report", "free_cores"]

# COCO's area ranges for small / medium / large objects (pixels^2)
SMALL_AREA, LARGE_AREA = 32**2, 96**2


@dataclass
class SplitReport:
    """What the doctor found in one split."""

    split: str
    problems: list[DatasetProblem] = field(default_factory=list)
    images: int = 0
    background_images: int = 0
    boxes: int = 0
    ignored_boxes: int = 0
    class_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    """The dataset's category id of each class (COCO's 1..90, a YOLO descriptor's ids, ...), as eval lists them."""
    boxes_per_class: list[int] = field(default_factory=list)
    images_per_class: list[int] = field(default_factory=list)
    size_counts: dict[str, int] = field(default_factory=dict)
    box_wh: dict[str, list[float]] = field(default_factory=dict)
    fatal: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out

    @property
    def ok(self) -> bool:
        return not self.problems and self.fatal is None


def descriptor_for_folder(folder: str | os.PathLike, names: list[str] | None = None) -> dict[str, Any] | str:
    """A descriptor for a bare YOLO or VOC folder (or the path of the dataset YAML inside it).

    YOLO: ``images/<split>/`` with ``labels/<split>/`` (or flat ``images/`` + ``labels/``); class names from
    ``names``, a ``classes.txt``, or numbers. VOC: ``ImageSets/Main/*.txt`` with ``Annotations/`` and
    ``JPEGImages/``; names default to the 20 VOC classes.
    """
    root = Path(folder)
    yamls = sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml"))
    if yamls:
        return str(yamls[0])
    if (root / "ImageSets" / "Main").is_dir():
        sets = sorted((root / "ImageSets" / "Main").glob("*.txt"))
        sets = [s for s in sets if "_" not in s.stem]  # skip per-class lists like aeroplane_train.txt
        if not sets:
            raise DatasetError(f"{root}/ImageSets/Main: no image-set .txt files")
        desc: dict[str, Any] = {"format": "voc", "path": str(root), "name": root.name,
                                "splits": {s.stem: str(s) for s in sets}}  # fmt: skip
        if names:
            desc["names"] = names
        return desc
    if (root / "images").is_dir():
        subdirs = sorted(d for d in (root / "images").iterdir() if d.is_dir())
        splits = {d.name: f"images/{d.name}" for d in subdirs} or {"all": "images"}
        if names is None and (root / "classes.txt").is_file():
            names = [n.strip() for n in (root / "classes.txt").read_text(encoding="utf-8").splitlines() if n.strip()]
        if names is None:
            top = -1
            for txt in (root / "labels").rglob("*.txt"):
                for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
                    head = line.split()[:1]
                    if head and head[0].isdigit():
                        top = max(top, int(head[0]))
            names = [str(i) for i in range(max(top + 1, 1))]
        return {"format": "yolo", "path": str(root), "name": root.name, "names": names, "splits": splits}
    raise DatasetError(
        f"{root}: not a dataset folder (expected a dataset YAML, images/ + labels/ (YOLO) or ImageSets/Main (VOC))"
    )


def check_dataset(
    descriptor: str | os.PathLike | dict[str, Any], splits: list[str] | None = None, decode: bool = True,
    progress: bool | None = None, full_decode: bool = False, workers: int | None = None,
) -> list[SplitReport]:
    """Check every split (or ``splits``) of a dataset; one :class:`SplitReport` per split.

    Args:
        decode: look at every image file (False: annotations only).
        progress: a bar while the images are checked (None: when stderr is a terminal).
        full_decode: decode every image in full (finds corrupt JPEG data too; ~20x slower) instead of
            checking its header, end marker (JPEG) and checksums (PNG).
        workers: threads checking images (None: the free cores, see :func:`free_cores`).
    """
    desc = load_descriptor(descriptor)
    reports = []
    for split in splits or list(desc["splits"]):
        reports.append(_check_split(descriptor, desc, split, decode, progress, full_decode, workers))
    return reports


def free_cores() -> int:
    """Cores this process may use minus the current load (1-minute average), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        load = 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


def _image_size(path: str, full_decode: bool) -> tuple[int, int] | ImageReadError:
    try:
        if full_decode:
            return read_image(path).shape[:2]
        return verify_image(path)
    except ImageReadError as err:
        return err


def _ordered_map(pool: ThreadPoolExecutor, fn: Any, items: list[Any], block: int = 1024):
    """``pool.map(fn, items)`` with at most ``block`` items in flight (not one future per image at once)."""
    for start in range(0, len(items), block):
        yield from pool.map(fn, items[start : start + block])


def _check_split(
    descriptor: Any, desc: dict[str, Any], split: str, decode: bool, progress: bool | None,
    full_decode: bool = False, workers: int | None = None,
) -> SplitReport:
    rep = SplitReport(split)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = build_dataset(descriptor, split)
    except DatasetError as err:
        rep.fatal = str(err)
        return rep
    report: ProblemReport = ds.skipped
    report.warn = False
    undecodable: set[int] = set()
    if decode:
        table = ds.records
        paths = table.paths()
        with ThreadPoolExecutor(max_workers=workers or free_cores()) as pool:
            # results in record order (deterministic reports); OpenCV, Pillow and file reads release the GIL
            sizes = _ordered_map(pool, lambda p: _image_size(p, full_decode), paths)
            for i, (path, size) in enumerate(progress_bar(zip(paths, sizes), progress, f"check {split}",
                                                          total=len(paths))):  # fmt: skip
                if isinstance(size, ImageReadError):
                    report.add(size.kind, size.path, size.reason)
                    undecodable.add(i)
                    continue
                h, w = size
                rec_h, rec_w = table.size(i)
                if rec_h is not None and (rec_h, rec_w) != (h, w):
                    report.add("size_mismatch", path,
                               f"annotation says {rec_w}x{rec_h} (WxH) but the image decodes to {w}x{h}")  # fmt: skip
                else:
                    table.set_size(i, h, w)
    if desc["format"] == "yolo":
        _orphan_labels(ds, report)
    rep.problems = list(report.problems)
    # training skips images that do not decode: leave them out of the statistics too
    if undecodable:
        ds.records = ds.records.select([i for i in range(len(ds.records)) if i not in undecodable])
    _statistics(ds, rep)
    return rep


def _orphan_labels(ds: DetectionDataset, report: ProblemReport) -> None:
    """Label files with no image of the same stem in the matching image folder (records alone would also
    flag the label files of images skipped for another, already reported, reason)."""
    image_dirs = {yolo_label_path(p).parent: Path(p).parent for p in ds.records.paths()}
    for d, image_dir in sorted(image_dirs.items()):
        stems = {q.stem for q in image_dir.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES}
        for txt in sorted(d.glob("*.txt")):
            if txt.stem not in stems:
                names = [txt.with_suffix(s).name for s in IMAGE_SUFFIXES[:2]]
                report.add("orphan_label_file", str(txt), f"label file without an image (looked for {', '.join(names)}, ...)")


def _statistics(ds: DetectionDataset, rep: SplitReport) -> None:
    c = ds.num_classes
    rep.class_names = list(ds.class_names)
    rep.category_ids = list(ds.category_ids)
    rep.images = len(ds)
    t = ds.records
    counts = t.box_counts()
    rep.ignored_boxes = len(t.ignore_labels)
    rep.background_images = int((counts == 0).sum())
    boxes_per_class = np.bincount(t.labels, minlength=c)[:c]
    image_of_box = np.repeat(np.arange(len(t)), counts)
    pairs = np.unique(image_of_box * c + t.labels)  # (image, class) pairs
    images_per_class = np.bincount(pairs % c, minlength=c)[:c]
    # pixel sizes; a normalised (YOLO) box of an image whose size is unknown (decode=False) has none
    scale = np.stack([t.widths, t.heights] * 2, 1)[image_of_box].astype(np.float32)
    norm = t.normalized[image_of_box]
    known = ~(norm & np.isnan(scale).any(1))
    b = np.where(norm[:, None], t.boxes * scale, t.boxes)[known]
    widths = [b[:, 2] - b[:, 0]] if len(b) else []
    heights = [b[:, 3] - b[:, 1]] if len(b) else []
    rep.boxes = int(boxes_per_class.sum())
    rep.boxes_per_class = boxes_per_class.tolist()
    rep.images_per_class = images_per_class.tolist()
    if widths:
        w, h = np.concatenate(widths), np.concatenate(heights)
        area = w * h
        rep.size_counts = {
            "small": int((area < SMALL_AREA).sum()),
            "medium": int(((area >= SMALL_AREA) & (area < LARGE_AREA)).sum()),
            "large": int((area >= LARGE_AREA).sum()),
        }
        q = [0, 50, 100]
        rep.box_wh = {"width": np.percentile(w, q).round(1).tolist(), "height": np.percentile(h, q).round(1).tolist()}


def format_report(reports: list[SplitReport], max_per_kind: int | None = None, classes: bool = True) -> str:
    """Human-readable text: every problem (or the first ``max_per_kind`` of each kind), counts per kind,
    then statistics per split."""
    lines: list[str] = []
    for rep in reports:
        lines.append(f"== split {rep.split}")
        if rep.fatal:
            lines.append(f"  FATAL: {rep.fatal}")
            continue
        shown: dict[str, int] = {}
        for p in rep.problems:
            shown[p.kind] = shown.get(p.kind, 0) + 1
            if max_per_kind is None or shown[p.kind] <= max_per_kind:
                lines.append(f"  {p}")
        if rep.problems:
            lines.append("  problems by kind:")
            for kind, n in sorted(rep.counts.items()):
                effect = {"image": "images skipped", "box": "boxes skipped", "fixed": "repaired/reported",
                          "fatal": "fatal"}[PROBLEM_KINDS[kind]]  # fmt: skip
                lines.append(f"    {kind:<26} {n:>7}  ({effect})")
        else:
            lines.append("  no problems")
        lines.append(
            f"  images {rep.images} (background {rep.background_images}), boxes {rep.boxes}"
            + (f", crowd/difficult (eval only) {rep.ignored_boxes}" if rep.ignored_boxes else "")
        )
        if rep.size_counts:
            sc = rep.size_counts
            lines.append(
                f"  box sizes: small {sc['small']} / medium {sc['medium']} / large {sc['large']} (COCO area ranges); "
                f"width min/median/max {rep.box_wh['width']}, height {rep.box_wh['height']} px"
            )
        if classes and rep.class_names:
            ids = rep.category_ids or list(range(len(rep.class_names)))
            w = max(len("id"), *(len(str(c)) for c in ids))
            lines.append(f"  {'id':>{w}} {'class':<20} {'images':>7} {'boxes':>7}")
            for k, name in enumerate(rep.class_names):
                lines.append(f"  {ids[k]:>{w}} {name:<20} {rep.images_per_class[k]:>7} {rep.boxes_per_class[k]:>7}")
            missing = [n for n, b in zip(rep.class_names, rep.boxes_per_class) if b == 0]
            if missing:
                lines.append(f"  classes without boxes ({len(missing)}): {', '.join(missing)}")
    total = sum(len(r.problems) for r in reports) + sum(1 for r in reports if r.fatal)
    lines.append(f"== {'CLEAN' if total == 0 else f'{total} problem(s) found'}")
    return "\n".join(lines)
