"""Detection datasets: COCO json, YOLO txt and Pascal VOC xml behind one :class:`DetectionDataset`.

Every reader turns its format into :class:`ImageRecord` s (one per usable image; COCO straight into a
:class:`RecordTable`, the flat arrays every dataset keeps them in) at construction, validating every image entry
and box on the way (see :mod:`cspdet.data.problems` for what happens to bad
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

import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch.utils.data

from .cache import ImageCache
from .coco_format import read_coco
from .descriptor import _as_list, _resolve, _short, load_descriptor
from .image_io import ImageReadError, image_size, read_image
from .problems import DatasetError, DatasetProblem, ProblemReport
from .record_table import RecordTable, drop_duplicate_boxes_table
from .records import ImageRecord, Sample, _finish
from .voc_format import VOC_CLASSES, read_voc
from .yolo_format import read_yolo

__all__ = ["DetectionDataset", "build_dataset", "load_descriptor"]

class DetectionDataset(torch.utils.data.Dataset):
    """Images with boxes, format-independent (build one with :func:`build_dataset`).

    ``dataset[i]`` is ``load_sample(i)``: a :class:`Sample` with the decoded image.

    Attributes:
        records: the :class:`RecordTable` (flat arrays; ``records[i]`` is the :class:`ImageRecord` of sample
            ``i``, built on demand: change a record through the table, e.g. ``records.set_size``). Given a list
            of records, the dataset stores them as a table.
        class_names: C names, index = contiguous label.
        category_ids: C original category ids (COCO ids; for YOLO/VOC the descriptor's ``category_ids`` or
            0..C-1), index = contiguous label.
        image_ids: one id per sample, in sample order.
        skipped: :class:`ProblemReport` of everything skipped or repaired while reading (and loading).
        name: ``"<descriptor name> <split>"`` for messages.
    """

    def __init__(
        self,
        records: list[ImageRecord] | RecordTable,
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
        self.records = RecordTable.from_records(records)
        self.class_names = list(class_names)
        self.category_ids = [int(c) for c in category_ids]
        self.skipped = report if report is not None else ProblemReport(name=name)
        self.name = name
        self.format = format
        self.image_ids = self.records.image_ids.tolist()
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
        path = self.records.path(index)
        if self.cache is not None:
            return self.cache.get(path)
        return read_image(path)

    def targets(self, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (N, 4) float32 xyxy px, labels (N,) int64) of ``index`` for an image of that size.

        Boxes are clipped to the image (a stored size that disagrees with the decoded one was already
        reported when reading); boxes that vanish by clipping are dropped.
        """
        table = self.records
        boxes, labels = table.image_boxes(index)
        if table.normalized[index]:
            boxes = boxes * np.array([width, height, width, height], np.float32)
        else:
            boxes = boxes.copy()
        rec_h, rec_w = table.size(index)
        if rec_h is not None and (rec_h != height or rec_w != width) and len(boxes):
            np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
            np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, labels = boxes[keep], labels[keep]
        return boxes, labels

    def load_sample(self, index: int) -> Sample:
        """Decode sample ``index``; raises :class:`ImageReadError` (naming the file) for a bad image."""
        image = self.load_image(index)
        h, w = image.shape[:2]
        rec_h, rec_w = self.records.size(index)
        if rec_h is not None and (rec_h, rec_w) != (h, w):
            self._note_size_mismatch(index, h, w)
        boxes, labels = self.targets(index, h, w)
        return Sample(image, boxes, labels, int(self.records.image_ids[index]), self.records.path(index))

    def try_load_sample(self, index: int, decode: Callable[[int], Any] | None = None) -> Any:
        """:meth:`load_sample` (or ``decode(index)``, another way of decoding the same image, e.g. the
        training loader's resized one), or None for an image that cannot be decoded, which is then reported through
        :meth:`report_load_failure` (a :class:`DatasetWarning` naming the file, counted in ``skipped``, once per
        file; :class:`DatasetError` in strict mode).

        The one rule for an undecodable image wherever a run decodes dataset images (training loader, cache
        warm-up, evaluation, logged images): skip it with a warning and a count. Callers decide only what takes
        its place (another sample, a grey placeholder, nothing).
        """
        try:
            return (decode or self.load_sample)(index)
        except ImageReadError as err:
            self.report_load_failure(index, err)
            return None

    def _note_size_mismatch(self, index: int, h: int, w: int) -> None:
        rec_h, rec_w = self.records.size(index)
        self._report_runtime(
            "size_mismatch",
            self.records.path(index),
            f"annotation says {rec_w}x{rec_h} (WxH) but the image decodes to {w}x{h}; boxes clipped",
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

        table = self.records
        for i in np.flatnonzero(np.isnan(table.heights) | np.isnan(table.widths)).tolist():
            try:
                table.set_size(i, *image_size(table.path(i)))
            except ImageReadError as err:
                self.report_load_failure(i, err)
                table.set_size(i, 0, 0)
        paths = table.paths()
        images = [
            {"id": image_id, "file_name": os.path.basename(path) if path is not None else None, "height": h,
             "width": w}
            for image_id, path, h, w in zip(
                table.image_ids.tolist(), paths, map(_as_size, table.heights.tolist()),
                map(_as_size, table.widths.tolist()),
            )
        ]  # fmt: skip
        if table.gt is not None:  # COCO: the json's own ground truth, as given
            gt = table.gt
            image_of = np.repeat(table.image_ids, np.diff(gt["gt_offsets"])).tolist()
            annotations = [
                {"id": i, "image_id": im, "category_id": c, "bbox": bbox, "area": area, "iscrowd": crowd}
                for i, im, c, bbox, area, crowd in zip(
                    gt["gt_ids"].tolist(), image_of, gt["gt_category_ids"].tolist(), gt["gt_bbox"].tolist(),
                    gt["gt_area"].tolist(), gt["gt_iscrowd"].tolist(),
                )
            ]  # fmt: skip
        else:
            annotations = self._gt_annotations()
        categories = [{"id": c, "name": n} for c, n in zip(self.category_ids, self.class_names)]
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
        with _quiet_stdout():
            coco.createIndex()
        self._coco = coco
        return coco

    def _gt_annotations(self) -> list[dict[str, Any]]:
        """COCO annotations of every training and crowd / difficult box (formats without their own ground truth),
        with the original ids where the format has them, else fresh ones."""
        annotations: list[dict[str, Any]] = []
        table = self.records
        next_ann_id = 1
        used_ids = set()
        for ids in (table.ann_ids, table.ignore_ann_ids):
            if ids is not None:
                used_ids.update(ids.tolist())
        for i in range(len(table)):
            rec = table[i]
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
        return annotations

    def __repr__(self) -> str:
        n_boxes = len(self.records.labels)
        return (
            f"{type(self).__name__}({self.name!r}, format={self.format}, images={len(self)}, "
            f"boxes={n_boxes}, classes={self.num_classes}, problems={len(self.skipped)})"
        )


def _as_size(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


class _quiet_stdout:
    """pycocotools prints "creating index..."; keep library calls silent."""

    def __enter__(self):
        import contextlib
        import io

        self._ctx = contextlib.redirect_stdout(io.StringIO())
        self._ctx.__enter__()

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


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
    outside = desc.get("allow_outside", False)
    if fmt == "coco":
        if not isinstance(spec, dict) or set(spec) - {"images", "annotations"} or "annotations" not in spec:
            raise DatasetError(
                f"{src}: COCO split {split!r} must be a mapping with 'images' (directory) and "
                f"'annotations' (json file), got {_short(spec)}"
            )
        ann = _resolve(root, spec["annotations"], src, f"{split}.annotations")
        images = _resolve(root, spec.get("images", "."), src, f"{split}.images")
        records, names, category_ids = read_coco(ann, images, report, names=names, allow_outside=outside)
    elif fmt == "yolo":
        specs = _as_list(spec)
        bad = next((s for s in specs if not isinstance(s, (str, os.PathLike))), None)
        if bad is not None or not specs:
            raise DatasetError(f"{src}: YOLO split {split!r} must be an image folder or .txt list (or a list of "
                               f"them), got {_short(bad if specs else spec)}")
        specs = [str(s) for s in specs]
        records = read_yolo(specs, root, len(names), report, allow_outside=outside, src=src)
    else:
        names = names or list(VOC_CLASSES)
        files = [_resolve(root, s, src, split) for s in _as_list(spec)]
        records = read_voc(files, names, report, allow_outside=outside)
    table = RecordTable.from_records(records)
    if fmt == "coco":
        def where(t: RecordTable, i: int, j: int) -> str:
            return f"{ann} annotation id {t.ann_ids[t.box_offsets[i] + j]}"
    else:
        def where(t: RecordTable, i: int, j: int) -> str:
            return f"{t.path(i)} box {j}"
    # all formats, one vectorised pass (YOLO names its lines itself)
    records = drop_duplicate_boxes_table(table, report, where)
    _finish(records, report, f"{src} split {split!r}")
    return DetectionDataset(records, names, category_ids, report, name=name, cache=cache, format=fmt)
