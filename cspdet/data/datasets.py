"""Detection datasets: COCO json, YOLO txt and Pascal VOC xml behind one :class:`DetectionDataset`.

Every reader turns its format into a list of :class:`ImageRecord` (one per usable image) at construction,
validating every image entry and box on the way (see :mod:`cspdet.data.problems` for what happens to bad
input). Conversions happen here, once, at the edge:

- COCO ``bbox`` ``[x, y, w, h]`` px -> ``[x1, y1, x2, y2]`` px; category ids -> contiguous labels 0..C-1
  in ascending id order (``category_ids[label]`` maps back);
- YOLO lines ``cls cx cy w h`` (normalised) -> normalised xyxy, scaled to pixels when the image is decoded
  (so no image header has to be read to build the dataset);
- VOC ``<bndbox>`` 1-based inclusive pixel indices -> ``[xmin - 1, ymin - 1, xmax, ymax]``.

Boxes that COCO marks ``iscrowd`` and VOC marks ``difficult`` are kept out of the training targets but stay
in :meth:`DetectionDataset.coco_gt`, where COCOeval ignores them. Images without boxes stay in the dataset as
background images.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch.utils.data

from .cache import ImageCache
from .image_io import IMAGE_SUFFIXES, ImageReadError, image_size, read_image
from .problems import PROBLEM_KINDS, DatasetError, DatasetProblem, DatasetWarning, ProblemReport, user_stacklevel

__all__ = [
    "Sample",
    "ImageRecord",
    "DetectionDataset",
    "build_dataset",
    "load_descriptor",
    "read_coco",
    "read_yolo",
    "read_voc",
    "yolo_label_path",
    "VOC_CLASSES",
    "BOX_TOLERANCE_PX",
]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

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


class DetectionDataset(torch.utils.data.Dataset):
    """Images with boxes, format-independent (build one with :func:`build_dataset`).

    ``dataset[i]`` is ``load_sample(i)``: a :class:`Sample` with the decoded image.

    Attributes:
        class_names: C names, index = contiguous label.
        category_ids: C original category ids (COCO ids; for YOLO/VOC the descriptor's ``category_ids`` or
            0..C-1), index = contiguous label.
        image_ids: one id per sample, in sample order.
        skipped: :class:`ProblemReport` of everything skipped or repaired while reading (and loading).
        name: ``"<descriptor name> <split>"`` for messages.
    """

    def __init__(
        self,
        records: list[ImageRecord],
        class_names: list[str],
        category_ids: list[int] | None = None,
        report: ProblemReport | None = None,
        name: str = "dataset",
        cache: bool | str | ImageCache = False,
        format: str = "custom",
    ):
        if category_ids is None:
            category_ids = list(range(len(class_names)))
        if len(category_ids) != len(class_names):
            raise DatasetError(
                f"{name}: {len(class_names)} class names but {len(category_ids)} category ids"
            )
        self.records = records
        self.class_names = list(class_names)
        self.category_ids = [int(c) for c in category_ids]
        self.skipped = report if report is not None else ProblemReport(name=name)
        self.name = name
        self.format = format
        self.image_ids = [r.image_id for r in records]
        if isinstance(cache, ImageCache):
            self.cache: ImageCache | None = cache
        elif cache:
            self.cache = ImageCache("disk" if cache == "disk" else "ram")
        else:
            self.cache = None
        self._coco = None
        self._runtime_seen: set[tuple[str, str]] = set()  # (kind, file) of problems found while decoding
        self._pending: list[DatasetProblem] = []  # found in a worker process, not yet handed to the main one

    # ------------------------------------------------------------------------------------ basic access
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        return self.load_sample(index)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_image(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of sample ``index``; raises :class:`ImageReadError`.

        With a cache the array is shared: copy it before writing into it.
        """
        path = self.records[index].path
        if self.cache is not None:
            return self.cache.get(path)
        return read_image(path)

    def targets(self, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (N, 4) float32 xyxy px, labels (N,) int64) of ``index`` for an image of that size.

        Boxes are clipped to the image (a stored size that disagrees with the decoded one was already
        reported when reading); boxes that vanish by clipping are dropped.
        """
        rec = self.records[index]
        boxes = rec.boxes
        if rec.normalized:
            boxes = boxes * np.array([width, height, width, height], np.float32)
        else:
            boxes = boxes.copy()
        labels = rec.labels
        if rec.height is not None and (rec.height != height or rec.width != width) and len(boxes):
            np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
            np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, labels = boxes[keep], labels[keep]
        return boxes, labels

    def load_sample(self, index: int) -> Sample:
        """Decode sample ``index``; raises :class:`ImageReadError` (naming the file) for a bad image."""
        rec = self.records[index]
        image = self.load_image(index)
        h, w = image.shape[:2]
        if rec.height is not None and (rec.height, rec.width) != (h, w):
            self._note_size_mismatch(index, h, w)
        boxes, labels = self.targets(index, h, w)
        return Sample(image, boxes, labels, rec.image_id, rec.path)

    def _note_size_mismatch(self, index: int, h: int, w: int) -> None:
        rec = self.records[index]
        self._report_runtime(
            "size_mismatch",
            rec.path,
            f"annotation says {rec.width}x{rec.height} (WxH) but the image decodes to {w}x{h}; boxes clipped",
        )

    def report_load_failure(self, index: int, err: ImageReadError) -> None:
        """Count an image that failed to decode during training/eval (the loaders replace it).

        In strict mode this raises :class:`DatasetError` with the same message (in the main process, see
        :meth:`_report_runtime`); otherwise it warns and counts.
        """
        self._report_runtime(err.kind, err.path, f"{err.reason} (while loading sample {index})")

    def _report_runtime(self, kind: str, source: str, message: str) -> None:
        """A problem found while decoding images (not while reading annotations), reported once per
        (kind, file) however often the image is requested.

        DataLoader workers hold their own copy of this dataset, so a problem found in a worker is queued
        (:meth:`take_pending`), travels back with the sample through the collate function and is recorded
        in the main process's ``skipped`` by the loader (:meth:`record_problems`). In the main process it is
        recorded at once: a :class:`DatasetWarning`, or in strict mode a :class:`DatasetError`.
        """
        key = (kind, str(source))
        if key in self._runtime_seen:
            return
        self._runtime_seen.add(key)
        if torch.utils.data.get_worker_info() is not None:
            self._pending.append(DatasetProblem(kind, str(source), message))
        else:
            self.skipped.add(kind, source, message)

    def take_pending(self) -> list[DatasetProblem]:
        """Problems queued in this (worker) process since the last call; the caller hands them on."""
        pending, self._pending = self._pending, []
        return pending

    def record_problems(self, problems: Iterable[DatasetProblem]) -> int:
        """Record problems found in worker processes (main process; duplicates from several workers are
        dropped). Warns per problem, or raises :class:`DatasetError` in strict mode. Returns how many
        were new."""
        new = 0
        for p in problems:
            key = (p.kind, p.source)
            if key in self._runtime_seen:
                continue
            self._runtime_seen.add(key)
            new += 1
            self.skipped.add(p.kind, p.source, p.message)
        return new

    # ------------------------------------------------------------------------------------- evaluation
    def coco_gt(self):
        """Ground truth as an in-memory ``pycocotools.coco.COCO`` with the original image and category ids.

        Contains every usable image (also background ones), every valid box including crowd (COCO) /
        difficult (VOC) boxes as ``iscrowd=1``. ``area`` is the box area. Image sizes missing from the
        annotations (YOLO) are read from the image headers once and remembered.
        """
        if self._coco is not None:
            return self._coco
        from pycocotools.coco import COCO

        images, annotations = [], []
        next_ann_id = 1
        used_ids = {a for r in self.records for a in (r.ann_ids or []) + (r.ignore_ann_ids or [])}
        for rec in self.records:
            if rec.height is None:
                try:
                    rec.height, rec.width = image_size(rec.path)
                except ImageReadError as err:
                    self.report_load_failure(self.image_ids.index(rec.image_id), err)
                    rec.height, rec.width = 0, 0
            images.append(
                {"id": rec.image_id, "file_name": os.path.basename(rec.path), "height": rec.height,
                 "width": rec.width}
            )  # fmt: skip
            if rec.coco_anns is not None:
                annotations.extend(dict(a) for a in rec.coco_anns)
                continue
            scale = np.array([rec.width, rec.height] * 2, np.float32) if rec.normalized else None
            for boxes, labels, ids, crowd in (
                (rec.boxes, rec.labels, rec.ann_ids, 0),
                (rec.ignore_boxes, rec.ignore_labels, rec.ignore_ann_ids, 1),
            ):
                if scale is not None:
                    boxes = boxes * scale
                for j, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist())):
                    if ids is not None:
                        ann_id = ids[j]
                    else:
                        while next_ann_id in used_ids:
                            next_ann_id += 1
                        ann_id = next_ann_id
                        next_ann_id += 1
                    x1, y1, x2, y2 = box
                    w, h = x2 - x1, y2 - y1
                    annotations.append(
                        {"id": ann_id, "image_id": rec.image_id, "category_id": self.category_ids[label],
                         "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": crowd}
                    )  # fmt: skip
        categories = [{"id": c, "name": n} for c, n in zip(self.category_ids, self.class_names)]
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
        with _quiet_stdout():
            coco.createIndex()
        self._coco = coco
        return coco

    def __repr__(self) -> str:
        n_boxes = sum(len(r.labels) for r in self.records)
        return (
            f"{type(self).__name__}({self.name!r}, format={self.format}, images={len(self)}, "
            f"boxes={n_boxes}, classes={self.num_classes}, problems={len(self.skipped)})"
        )


class _quiet_stdout:
    """pycocotools prints "creating index..."; keep library calls silent."""

    def __enter__(self):
        import contextlib
        import io

        self._ctx = contextlib.redirect_stdout(io.StringIO())
        self._ctx.__enter__()

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


# ======================================================================================== shared checks


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


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


def _finish(records: list[ImageRecord], report: ProblemReport, what: str) -> None:
    if not records:
        report.add("empty_dataset", what, "no usable images" + (f" ({report.summary()})" if report else ""))
    if report:
        warnings.warn(
            report.summary(hint="dataset.skipped, or `python tools/check_dataset.py` for the full list"),
            DatasetWarning,
            stacklevel=user_stacklevel(),
        )


# ================================================================================================ COCO


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not a UTF-8 JSON file ({err.reason} at byte {err.start})") from None


def read_coco(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    report: ProblemReport,
    names: list[str] | None = None,
) -> tuple[list[ImageRecord], list[str], list[int]]:
    """Parse a COCO instances json (validated via plain json, indexed like pycocotools does).

    Returns (records, class_names, category_ids). Problems go to ``report`` (see module docstring).
    """
    ann_path, image_dir = Path(annotation_file), Path(image_dir)
    data = _load_json(ann_path)
    if not image_dir.is_dir():  # else every image would be "not found" without naming the folder
        report.add("missing_folder", str(image_dir), f"images folder not found (the images of {ann_path.name})")
    return parse_coco(data, str(ann_path), image_dir, report, names)


def parse_coco(
    data: Any,
    src: str,
    image_dir: Path | None,
    report: ProblemReport,
    names: list[str] | None = None,
) -> tuple[list[ImageRecord], list[str], list[int]]:
    """:func:`read_coco` on json already loaded from file ``src``. With ``image_dir=None`` only the json is
    checked (images need no ``file_name`` and are not looked for on disk; records have ``path=None``)."""
    if not isinstance(data, dict):
        report.add("malformed_file", src, f"expected a JSON object with images/annotations/categories, got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            report.add("malformed_file", src, f"missing or non-list '{key}' (is this a COCO instances file?)")
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        report.add("malformed_file", src, "'annotations' is not a list")

    # categories -> contiguous labels in ascending id order (the usual COCO 80-class order)
    cats: dict[int, str] = {}
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or isinstance(cat.get("id"), bool):
            report.add("malformed_file", f"{src} categories[{k}]", f"category needs an integer 'id', got {cat!r:.80}")
        if cat["id"] in cats:
            report.add("malformed_file", f"{src} categories[{k}]", f"duplicate category id {cat['id']}")
        cats[cat["id"]] = str(cat.get("name", cat["id"]))
    if not cats:
        report.add("malformed_file", src, "no categories")
    category_ids = sorted(cats)
    class_names = [cats[c] for c in category_ids]
    if names is not None and list(names) != class_names:
        report.add(
            "malformed_file", src,
            f"categories {class_names[:5]}... (in ascending id order) differ from the descriptor's names "
            f"{list(names)[:5]}...; fix one of them so labels mean the same in every split",
        )  # fmt: skip
    label_of = {c: i for i, c in enumerate(category_ids)}

    # images
    order: list[int] = []
    info: dict[int, dict[str, Any]] = {}
    for k, img in enumerate(data["images"]):
        where = f"{src} images[{k}]"
        need_file = image_dir is not None
        if (not isinstance(img, dict) or not _is_int(img.get("id"))
                or (need_file and not isinstance(img.get("file_name"), str))):
            needs = "integer 'id' and string 'file_name'" if need_file else "an integer 'id'"
            report.add("bad_image_entry", where, f"image entry needs {needs}, got {img!r:.100}")
            continue
        where = f"{src} image id {img['id']}"
        if img["id"] in info:
            report.add("duplicate_image", where, f"duplicate image id (file {img.get('file_name')}); keeping the first entry")
            continue
        h, w = img.get("height"), img.get("width")
        if not (_is_number(h) and _is_number(w) and h > 0 and w > 0):
            h = w = None  # read from the file header later if needed
        path = image_dir / img["file_name"] if need_file else None
        if path is not None and not path.is_file():
            report.add("missing_image", str(path), f"image file not found (image id {img['id']} in {Path(src).name})")
            info[img["id"]] = {"skip": True}
            continue
        info[img["id"]] = {"path": path if path is None else str(path), "h": h, "w": w, "boxes": [], "labels": [],
                           "ids": [], "iboxes": [], "ilabels": [], "iids": [], "anns": []}  # fmt: skip
        order.append(img["id"])

    # annotations
    seen_ann: set[int] = set()
    for k, ann in enumerate(anns if isinstance(anns, list) else []):
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        if not _is_int(ann_id):
            ann_id = None  # a missing or non-integer id (e.g. a list) is named by position instead
        where = f"{src} annotation id {ann_id}" if ann_id is not None else f"{src} annotations[{k}]"
        if not isinstance(ann, dict):
            report.add("bad_box", where, f"annotation is not an object: {ann!r:.80}")
            continue
        if ann_id is not None:
            if ann_id in seen_ann:
                report.add("duplicate_annotation", where, "duplicate annotation id; keeping the first")
                continue
            seen_ann.add(ann_id)
        image_ref = ann.get("image_id")
        img = info.get(image_ref) if _is_int(image_ref) else None
        if img is None:
            report.add("unknown_image_ref", where, f"refers to image id {image_ref!r:.40} which is not in 'images'")
            continue
        if img.get("skip"):
            continue  # its image was already reported
        cat_ref = ann.get("category_id")
        if not (_is_int(cat_ref) and cat_ref in label_of):
            report.add("unknown_category", where, f"category id {cat_ref!r:.40} is not in 'categories'")
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            report.add("bad_box", where, f"bbox must be 4 numbers [x, y, w, h], got {bbox!r:.80}")
            continue
        x, y, bw, bh = (float(v) for v in bbox)
        box = _check_box([x, y, x + bw, y + bh], img["w"], img["h"], where, report)
        if box is None:
            continue
        crowd = bool(ann.get("iscrowd", 0))
        pre = "i" if crowd else ""
        img[pre + "boxes"].append(box)
        img[pre + "labels"].append(label_of[ann["category_id"]])
        ann_id = ann_id if ann_id is not None else -(k + 1)
        img[pre + "ids"].append(ann_id)
        gt = {key: v for key, v in ann.items() if key != "segmentation"}
        gt["id"] = ann_id
        if box != [x, y, x + bw, y + bh]:
            gt["bbox"] = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
        if not _is_number(gt.get("area")):
            gt["area"] = (box[2] - box[0]) * (box[3] - box[1])
        gt["iscrowd"] = int(crowd)
        img["anns"].append(gt)

    records = []
    for image_id in order:
        img = info[image_id]
        records.append(
            ImageRecord(
                path=img["path"], image_id=image_id, height=img["h"], width=img["w"],
                boxes=np.array(img["boxes"], np.float32).reshape(-1, 4),
                labels=np.array(img["labels"], np.int64),
                ignore_boxes=np.array(img["iboxes"], np.float32).reshape(-1, 4),
                ignore_labels=np.array(img["ilabels"], np.int64),
                ann_ids=img["ids"], ignore_ann_ids=img["iids"], coco_anns=img["anns"],
            )
        )  # fmt: skip
    _fix_missing_ann_ids(records)
    return records, class_names, category_ids


def check_coco_ground_truth(data: Any, src: str, error: type[Exception] = DatasetError) -> None:
    """Validate COCO ground truth given for scoring (``tools/eval.py --ann``) as carefully as a training set:
    the checks and messages of :func:`read_coco` (without looking for image files), plus what pycocotools
    needs of every annotation (an integer ``id``, a finite ``area`` >= 0). Boxes that merely extend past
    their image are accepted (scored as given).

    Raises:
        error: (default :class:`DatasetError`) the first problem, naming the file, the annotation (or image)
            id and what is wrong, and how many more problems there are.
    """
    report = ProblemReport(name=src, warn=False)
    try:
        parse_coco(data, src, None, report)
    except DatasetError as err:  # a problem that makes the whole file unusable
        raise error(str(err)) from None
    problems = [p for p in report.problems if PROBLEM_KINDS[p.kind] != "fixed"]
    reported = {p.source for p in problems}
    for k, ann in enumerate(data.get("annotations") or []):
        if not isinstance(ann, dict):
            continue  # reported by parse_coco
        ann_id = ann.get("id")
        where = f"{src} annotation id {ann_id}" if _is_int(ann_id) else f"{src} annotations[{k}]"
        if where in reported:
            continue
        area = ann.get("area")
        if not _is_int(ann_id):
            problems.append(DatasetProblem("bad_box", where, "needs an integer 'id' (pycocotools indexes ground "
                                           f"truth by it), got {ann_id!r:.40}"))
        elif not (_is_number(area) and math.isfinite(area) and area >= 0):
            problems.append(DatasetProblem("bad_box", where, f"'area' must be a finite number >= 0 (COCO's size "
                                           f"ranges use it), got {area!r:.40}"))
    if problems:
        more = f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
        raise error(f"{problems[0]}{more}")


def _fix_missing_ann_ids(records: list[ImageRecord]) -> None:
    """Annotations without an integer id got a negative placeholder; give them fresh positive ids."""
    used = {a for r in records for a in r.ann_ids + r.ignore_ann_ids if a > 0}
    nxt = max(used, default=0) + 1
    for r in records:
        fresh: dict[int, int] = {}
        for ids in (r.ann_ids, r.ignore_ann_ids):
            for j, a in enumerate(ids):
                if a <= 0:
                    fresh[a] = ids[j] = nxt
                    nxt += 1
        for gt in r.coco_anns or []:
            if gt["id"] <= 0:
                gt["id"] = fresh[gt["id"]]


# ================================================================================================ YOLO


def yolo_label_path(image_path: str | os.PathLike) -> Path:
    """Ultralytics convention: the last ``images`` directory becomes ``labels``, the suffix ``.txt``."""
    parts = list(Path(image_path).parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _list_images(spec: str | Path, root: Path, report: ProblemReport) -> list[Path]:
    """Image paths of one YOLO split entry: a directory (searched recursively) or a .txt list."""
    p = Path(spec)
    if not p.is_absolute():
        p = root / p
    if p.is_dir():
        return sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
    if p.is_file() and p.suffix == ".txt":
        out = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            q = Path(line)
            q = q if q.is_absolute() else (root / q)  # Ultralytics lists are relative to the dataset root
            out.append(q)
        return out
    report.add("malformed_file", str(p), "split path is neither an image directory nor a .txt list of images")
    return []


def read_yolo(
    image_specs: list[str], root: Path, num_classes: int, report: ProblemReport
) -> list[ImageRecord]:
    """Parse YOLO label files for the images of one split (see :func:`yolo_label_path`).

    A missing label file means a background image. All label files missing is a layout error.
    """
    paths: list[Path] = []
    for spec in image_specs:
        paths.extend(_list_images(spec, root, report))
    if not paths:
        report.add("empty_dataset", str(root), f"no images found in {image_specs}")
    found_labels = 0
    kept_paths, parsed = [], []
    for path in paths:
        if not path.is_file():
            report.add("missing_image", str(path), "image file not found")
            continue
        label_file = yolo_label_path(path)
        boxes: list[list[float]] = []
        labels: list[int] = []
        if label_file.is_file():
            found_labels += 1
            parsed_file = _parse_yolo_label_file(label_file, num_classes, report)
            if parsed_file is None:
                continue
            boxes, labels = parsed_file
        kept_paths.append(str(path))
        parsed.append((boxes, labels))
    if kept_paths and not found_labels:
        report.add(
            "empty_dataset", str(root),
            f"none of the {len(kept_paths)} images has a label file; expected e.g. "
            f"{yolo_label_path(kept_paths[0])} (YOLO layout: images/<split>/x.jpg -> labels/<split>/x.txt)",
        )  # fmt: skip
    ids = _stable_image_ids(kept_paths)
    records = []
    for path, image_id, (boxes, labels) in zip(kept_paths, ids, parsed):
        records.append(
            ImageRecord(path=path, image_id=image_id, normalized=True,
                        boxes=np.array(boxes, np.float32).reshape(-1, 4), labels=np.array(labels, np.int64))
        )  # fmt: skip
    return records


def _parse_yolo_label_file(
    label_file: Path, num_classes: int, report: ProblemReport
) -> tuple[list[list[float]], list[int]] | None:
    """(boxes as normalised xyxy, labels) of one label file; None (reported) when it cannot be read."""
    boxes: list[list[float]] = []
    labels: list[int] = []
    seen: set[tuple] = set()
    try:
        text = label_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        # not kept as a background image: its objects would be trained on as background
        report.add("malformed_annotation_file", str(label_file), f"cannot read label file ({err}); image skipped")
        return None
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label_file}:{n}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            report.add("malformed_line", where, f"not numbers: {line.strip()[:80]!r} (expected 'class cx cy w h')")
            continue
        if len(values) == 5:
            cls, cx, cy, w, h = values
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        elif len(values) >= 7 and len(values) % 2 == 1:  # segment polygon: class x1 y1 x2 y2 ...
            cls = values[0]
            xs, ys = values[1::2], values[2::2]
            box = [min(xs), min(ys), max(xs), max(ys)]
        else:
            report.add("malformed_line", where, f"{len(values)} values; expected 5 ('class cx cy w h') or a polygon")
            continue
        if not (cls.is_integer() and 0 <= cls < num_classes):
            report.add("unknown_category", where, f"class {fields[0]} is not an integer in 0..{num_classes - 1}")
            continue
        checked = _check_box(box, 1.0, 1.0, where, report)
        if checked is None:
            continue
        key = (int(cls), *np.round(checked, 6).tolist())
        if key in seen:
            report.add("duplicate_annotation", where, "duplicate of an earlier line")
            continue
        seen.add(key)
        boxes.append(checked)
        labels.append(int(cls))
    return boxes, labels


# ================================================================================================= VOC


def read_voc(
    imageset_files: list[str | Path], class_names: list[str], report: ProblemReport
) -> list[ImageRecord]:
    """Parse Pascal VOC splits. Each entry is an ``<root>/ImageSets/Main/<set>.txt`` file; the images are
    ``<root>/JPEGImages/<id>.<ext>`` and the labels ``<root>/Annotations/<id>.xml``."""
    label_of = {n: i for i, n in enumerate(class_names)}
    entries: list[tuple[Path, str]] = []  # (root, image id stem)
    listed: dict[tuple[Path, str], str] = {}  # -> where it was first listed (file:line)
    for spec in imageset_files:
        spec = Path(spec)
        if not spec.is_file():
            report.add("malformed_file", str(spec), "VOC image-set file not found (expected <root>/ImageSets/Main/<set>.txt)")
        root = spec.parent.parent.parent
        if not (root / "JPEGImages").is_dir():  # else every image would be "not found" without naming the folder
            report.add("missing_folder", str(root / "JPEGImages"), f"images folder not found (the images of {spec.name})")
        try:
            text = spec.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            report.add("malformed_file", str(spec), f"cannot read VOC image-set file ({err})")
        for n, line in enumerate(text.splitlines(), 1):
            if line.split():
                key = (root, line.split()[0])
                if key in listed:
                    report.add("duplicate_image", f"{spec}:{n}", f"image '{key[1]}' already listed at {listed[key]}; keeping the first")
                    continue
                listed[key] = f"{spec.name}:{n}"
                entries.append(key)
    kept: list[tuple[str, ImageRecord]] = []
    seen_paths: set[str] = set()
    for root, stem in entries:
        xml_file = root / "Annotations" / f"{stem}.xml"
        if not xml_file.is_file():
            report.add("missing_annotation_file", str(xml_file), f"annotation file for image '{stem}' not found")
            continue
        try:
            tree = ET.parse(xml_file).getroot()
        except ET.ParseError as err:
            report.add("malformed_annotation_file", str(xml_file), f"malformed XML ({err})")
            continue
        image_path = _voc_image_path(root, stem, tree.findtext("filename"))
        if image_path is None:
            report.add("missing_image", str(root / "JPEGImages" / f"{stem}.jpg"), f"image file not found (listed in {xml_file.name})")
            continue
        if str(image_path) in seen_paths:
            report.add("duplicate_image", str(image_path), "listed more than once in the image sets; keeping the first")
            continue
        seen_paths.add(str(image_path))
        w = _to_int(tree.findtext("size/width"))
        h = _to_int(tree.findtext("size/height"))
        if not (w and h and w > 0 and h > 0):
            w = h = None
        rec = ImageRecord(path=str(image_path), image_id=0, boxes=_empty_boxes()[0], labels=_empty_boxes()[1],
                          height=h, width=w)  # fmt: skip
        boxes, labels, iboxes, ilabels = [], [], [], []
        for k, obj in enumerate(tree.iter("object")):
            name = (obj.findtext("name") or "").strip()
            where = f"{xml_file} object {k} ({name or 'no name'})"
            if name not in label_of:
                report.add("unknown_category", where, f"class name {name!r} is not in the dataset's names")
                continue
            try:
                vals = [float(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")]
            except (TypeError, ValueError):
                report.add("bad_box", where, "missing or non-numeric <bndbox> xmin/ymin/xmax/ymax")
                continue
            # VOC pixel indices are 1-based and inclusive: pixels xmin..xmax span [xmin - 1, xmax].
            box = _check_box([vals[0] - 1, vals[1] - 1, vals[2], vals[3]], w, h, where, report)
            if box is None:
                continue
            difficult = (obj.findtext("difficult") or "0").strip() == "1"
            (iboxes if difficult else boxes).append(box)
            (ilabels if difficult else labels).append(label_of[name])
        rec.boxes, rec.labels = np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)
        rec.ignore_boxes, rec.ignore_labels = np.array(iboxes, np.float32).reshape(-1, 4), np.array(ilabels, np.int64)
        kept.append((str(image_path), rec))
    for rec, image_id in zip((r for _, r in kept), _stable_image_ids([p for p, _ in kept])):
        rec.image_id = image_id
    return [r for _, r in kept]


def _to_int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


def _voc_image_path(root: Path, stem: str, filename: str | None) -> Path | None:
    candidates = [root / "JPEGImages" / filename] if filename else []
    candidates += [root / "JPEGImages" / f"{stem}{s}" for s in (".jpg", ".jpeg", ".png", ".JPG", ".PNG")]
    for c in candidates:
        if c.is_file():
            return c
    return None


# ========================================================================================= descriptors

_FORMATS = ("coco", "yolo", "voc")


def load_descriptor(descriptor: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    """Read and normalise a dataset descriptor (see ``datasets/README.md``).

    Returns a dict with ``format``, ``root`` (absolute Path), ``names`` (list or None), ``category_ids``
    (list or None), ``splits`` (name -> raw spec), ``name`` and ``source``.

    Relative ``path`` values are resolved against the descriptor file's directory first, then the
    current directory (Ultralytics YAMLs are often written relative to where training is started).
    """
    if isinstance(descriptor, (str, os.PathLike)):
        src = Path(descriptor)
        if not src.is_file():
            raise DatasetError(f"{src}: dataset descriptor not found")
        import yaml

        try:
            raw = yaml.safe_load(src.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            if mark is not None:  # "file:line: what" rather than PyYAML's multi-line report
                what = " ".join(f"{getattr(err, 'context', None) or ''} {getattr(err, 'problem', None) or ''}".split())
                raise DatasetError(f"{src}:{mark.line + 1}: malformed YAML at column {mark.column + 1} ({what})") from None
            raise DatasetError(f"{src}: malformed YAML ({' '.join(str(err).split())})") from None
        base_dir = src.resolve().parent
        name = src.stem
    elif isinstance(descriptor, dict):
        raw, src, base_dir = dict(descriptor), "<dict>", Path.cwd()
        name = str(raw.get("name", "dataset"))
    else:
        raise TypeError(f"descriptor must be a path or a dict, got {type(descriptor).__name__}")
    if not isinstance(raw, dict):
        raise DatasetError(f"{src}: a dataset descriptor must be a YAML mapping, got {type(raw).__name__}")
    fmt = raw.get("format")
    if fmt is None:
        fmt = "yolo" if "names" in raw and ("train" in raw or "val" in raw) else None
    if fmt not in _FORMATS:
        raise DatasetError(f"{src}: 'format' must be one of {', '.join(_FORMATS)}, got {fmt!r}")

    root_text = raw.get("path", ".")
    root = Path(os.path.expanduser(str(root_text)))
    if not root.is_absolute():
        candidates = [base_dir / root, Path.cwd() / root]
        root = next((c for c in candidates if c.exists()), candidates[0])
    if not root.exists():
        raise DatasetError(f"{src}: dataset root {root_text!r} not found (resolved to {root})")

    names = raw.get("names")
    if isinstance(names, dict):  # Ultralytics style {0: person, 1: bicycle}
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DatasetError(f"{src}: 'names' mapping keys must be class indices 0..C-1") from None
        if keys != list(range(len(keys))):
            raise DatasetError(f"{src}: 'names' keys must be exactly 0..{len(keys) - 1}, got {keys[:10]}")
        names = [str(names[k] if k in names else names[str(k)]) for k in keys]
    elif names is not None:
        if not isinstance(names, list) or not names:
            raise DatasetError(f"{src}: 'names' must be a non-empty list (or {{index: name}} mapping)")
        names = [str(n) for n in names]
    if names is not None and "nc" in raw and raw["nc"] != len(names):
        raise DatasetError(f"{src}: nc={raw['nc']} but {len(names)} names")
    if names is not None and len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DatasetError(f"{src}: duplicate class names {dup}")
    category_ids = raw.get("category_ids")
    if category_ids is not None:
        if not (isinstance(category_ids, list) and all(isinstance(c, int) for c in category_ids)):
            raise DatasetError(f"{src}: 'category_ids' must be a list of integers")
        if names is not None and len(category_ids) != len(names):
            raise DatasetError(f"{src}: {len(category_ids)} category_ids but {len(names)} names")
        if len(set(category_ids)) != len(category_ids):
            raise DatasetError(f"{src}: 'category_ids' has duplicates")
    if fmt == "yolo" and names is None:
        raise DatasetError(f"{src}: a YOLO dataset needs 'names' (class names, index = class id in the txt files)")
    splits = {k: raw[k] for k in ("train", "val", "test") if raw.get(k) is not None}
    splits.update({k: v for k, v in (raw.get("splits") or {}).items()})
    if not splits:
        raise DatasetError(f"{src}: no splits: give at least one of train, val, test")
    return {
        "format": fmt, "root": root.resolve(), "names": names, "category_ids": category_ids,
        "splits": splits, "name": str(raw.get("name", name)), "source": str(src),
    }  # fmt: skip


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _resolve(root: Path, value: Any, src: str, what: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise DatasetError(f"{src}: {what} must be a path string, got {value!r}")
    p = Path(os.path.expanduser(str(value)))
    return p if p.is_absolute() else root / p


def build_dataset(
    descriptor: str | os.PathLike | dict[str, Any],
    split: str,
    strict: bool = False,
    cache: bool | str = False,
) -> DetectionDataset:
    """Build the :class:`DetectionDataset` of one split of a dataset descriptor.

    Args:
        descriptor: path to a descriptor YAML (``datasets/*.yaml``), an Ultralytics dataset YAML, or the
            same content as a dict.
        split: ``"train"``, ``"val"``, ``"test"`` (or any key under ``splits:``).
        strict: raise :class:`DatasetError` on the first problem instead of skipping with a warning.
        cache: ``False``, ``True``/``"ram"`` or ``"disk"``: keep decoded images (see :mod:`.cache`).

    Raises:
        DatasetError: unusable descriptor / annotation file, unknown split, empty dataset, or (strict)
            any bad image or box. The message names the file and what is wrong.
    """
    desc = load_descriptor(descriptor)
    src = desc["source"]
    if split not in desc["splits"]:
        raise DatasetError(f"{src}: no split {split!r} (has: {', '.join(desc['splits'])})")
    spec = desc["splits"][split]
    root: Path = desc["root"]
    name = f"{desc['name']} {split}"
    report = ProblemReport(strict=strict, name=name)
    fmt = desc["format"]
    names = desc["names"]
    category_ids = desc["category_ids"]
    if fmt == "coco":
        if not isinstance(spec, dict) or set(spec) - {"images", "annotations"} or "annotations" not in spec:
            raise DatasetError(
                f"{src}: COCO split {split!r} must be a mapping with 'images' (directory) and "
                f"'annotations' (json file), got {spec!r}"
            )
        ann = _resolve(root, spec["annotations"], src, f"{split}.annotations")
        images = _resolve(root, spec.get("images", "."), src, f"{split}.images")
        records, names, category_ids = read_coco(ann, images, report, names=names)
    elif fmt == "yolo":
        specs = [str(s) for s in _as_list(spec)]
        records = read_yolo(specs, root, len(names), report)
    else:
        names = names or list(VOC_CLASSES)
        files = [_resolve(root, s, src, split) for s in _as_list(spec)]
        records = read_voc(files, names, report)
    _finish(records, report, f"{src} split {split!r}")
    return DetectionDataset(records, names, category_ids, report, name=name, cache=cache, format=fmt)
