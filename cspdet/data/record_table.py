"""The records of a whole split as a few flat arrays (:class:`RecordTable`): what the annotation readers build in one
vectorised pass and what the datasets, loader workers and evaluator read, without per-image Python objects
(shared by forked loader workers without copying; ``benchmarks/results/records.md``)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from .problems import ProblemReport
from .records import ImageRecord, _duplicate_message, _duplicates

__all__ = ["COCO_GT_KEYS", "RecordTable", "drop_duplicate_boxes_table"]


# the COCO ground-truth fields a RecordTable keeps per annotation (what COCOeval reads for boxes)
COCO_GT_KEYS = ("id", "image_id", "category_id", "bbox", "area", "iscrowd")


class RecordTable:
    """The records of a split as a few flat numpy arrays: a sequence of :class:`ImageRecord` to its users.

    ``table[i]`` builds the :class:`ImageRecord` of image ``i`` on demand (its arrays are read-only views into
    the table: copy before writing), ``len(table)`` and iteration work as on a list of records.

    Why: a COCO-train-sized split is 118k images and 860k boxes. As Python objects (one record, several small
    arrays, lists and dicts per image) it took longer to build and more memory than pycocotools' own index,
    and every DataLoader worker copied the pages it touched (reference counts live inside the objects). As
    flat arrays it is built in one vectorised pass, and workers read it without writing a byte of it.

    Arrays (I images, N training boxes, M crowd / difficult boxes, K COCO ground-truth annotations):
        image_ids (I,) int64; heights, widths (I,) float64, NaN where the format does not store the size;
        normalized (I,) bool (YOLO: boxes are fractions of the image size);
        boxes (N, 4) float32 xyxy, labels (N,) int64, box_offsets (I + 1,) int64 (image i's boxes are
        ``boxes[box_offsets[i]:box_offsets[i + 1]]``), ann_ids (N,) int64 or None;
        ignore_boxes (M, 4), ignore_labels (M,), ignore_offsets (I + 1,), ignore_ann_ids (M,) or None;
        paths: one utf-8 byte buffer ``path_bytes`` (uint8) and ``path_offsets`` (I + 1,), or None (no paths);
        gt: COCO only, the json's own valid annotations for scoring (``gt_ids``, ``gt_bbox`` (K, 4) float64
        xywh, ``gt_area``, ``gt_iscrowd``, ``gt_category_ids``, ``gt_offsets`` (I + 1,)), or None.
    """

    def __init__(
        self,
        *,
        image_ids: np.ndarray,
        heights: np.ndarray,
        widths: np.ndarray,
        normalized: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        box_offsets: np.ndarray,
        ignore_boxes: np.ndarray,
        ignore_labels: np.ndarray,
        ignore_offsets: np.ndarray,
        path_bytes: np.ndarray | None,
        path_offsets: np.ndarray | None,
        ann_ids: np.ndarray | None = None,
        ignore_ann_ids: np.ndarray | None = None,
        gt: dict[str, np.ndarray] | None = None,
    ):
        self.image_ids = np.ascontiguousarray(image_ids, np.int64)
        self.heights = np.ascontiguousarray(heights, np.float64)
        self.widths = np.ascontiguousarray(widths, np.float64)
        self.normalized = np.ascontiguousarray(normalized, bool)
        self.boxes = np.ascontiguousarray(boxes, np.float32).reshape(-1, 4)
        self.labels = np.ascontiguousarray(labels, np.int64)
        self.box_offsets = np.ascontiguousarray(box_offsets, np.int64)
        self.ignore_boxes = np.ascontiguousarray(ignore_boxes, np.float32).reshape(-1, 4)
        self.ignore_labels = np.ascontiguousarray(ignore_labels, np.int64)
        self.ignore_offsets = np.ascontiguousarray(ignore_offsets, np.int64)
        self.path_bytes = path_bytes
        self.path_offsets = path_offsets
        self.ann_ids = None if ann_ids is None else np.ascontiguousarray(ann_ids, np.int64)
        self.ignore_ann_ids = None if ignore_ann_ids is None else np.ascontiguousarray(ignore_ann_ids, np.int64)
        self.gt = gt
        for a in self._arrays():
            a.flags.writeable = False  # shared with every record view (and every worker): never written

    def _arrays(self) -> list[np.ndarray]:
        out = [self.image_ids, self.normalized, self.boxes, self.labels, self.box_offsets, self.ignore_boxes,
               self.ignore_labels, self.ignore_offsets]
        out += [a for a in (self.path_bytes, self.path_offsets, self.ann_ids, self.ignore_ann_ids) if a is not None]
        return out + list((self.gt or {}).values())

    # ------------------------------------------------------------------------------------ construction
    @staticmethod
    def encode_paths(paths: list[str | None]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(one uint8 buffer, (I + 1,) offsets) of ``paths``; (None, None) when none is given."""
        if not paths or all(p is None for p in paths):
            return None, None
        encoded = [os.fsencode(p) for p in paths]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
        return np.frombuffer(b"".join(encoded), np.uint8).copy(), offsets

    @classmethod
    def from_records(cls, records: Iterable[ImageRecord]) -> RecordTable:
        """A table of ``records`` (a list of :class:`ImageRecord`, e.g. from a reader, or another table)."""
        if isinstance(records, RecordTable):
            return records
        records = list(records)
        n = len(records)

        def offsets(counts: Iterable[int]) -> np.ndarray:
            out = np.zeros(n + 1, np.int64)
            np.cumsum(np.fromiter(counts, np.int64, n), out=out[1:])
            return out

        def cat(arrays: list[np.ndarray], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            arrays = [np.asarray(a, dtype).reshape(shape) for a in arrays]
            return np.concatenate(arrays) if arrays else np.zeros((0, *shape[1:]), dtype)

        def ids(key: str) -> np.ndarray | None:
            lists = [getattr(r, key) for r in records]
            if n == 0 or any(v is None for v in lists):
                return None
            return np.fromiter((a for v in lists for a in v), np.int64)

        path_bytes, path_offsets = cls.encode_paths([r.path for r in records])
        gt = None
        if n and all(r.coco_anns is not None for r in records):
            anns = [a for r in records for a in r.coco_anns]
            gt = {
                "gt_ids": np.array([a["id"] for a in anns], np.int64),
                "gt_bbox": np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4),
                "gt_area": np.array([a["area"] for a in anns], np.float64),
                "gt_iscrowd": np.array([a.get("iscrowd", 0) for a in anns], np.int8),
                "gt_category_ids": np.array([a["category_id"] for a in anns], np.int64),
                "gt_offsets": offsets(len(r.coco_anns) for r in records),
            }
        return cls(
            image_ids=np.array([r.image_id for r in records], np.int64),
            heights=np.array([_size_in(r.height) for r in records], np.float64),
            widths=np.array([_size_in(r.width) for r in records], np.float64),
            normalized=np.array([r.normalized for r in records], bool),
            boxes=cat([r.boxes for r in records], (-1, 4), np.float32),
            labels=cat([r.labels for r in records], (-1,), np.int64),
            box_offsets=offsets(len(r.labels) for r in records),
            ignore_boxes=cat([r.ignore_boxes for r in records], (-1, 4), np.float32),
            ignore_labels=cat([r.ignore_labels for r in records], (-1,), np.int64),
            ignore_offsets=offsets(len(r.ignore_labels) for r in records),
            path_bytes=path_bytes, path_offsets=path_offsets,
            ann_ids=ids("ann_ids"), ignore_ann_ids=ids("ignore_ann_ids"), gt=gt,
        )  # fmt: skip

    def _replace(self, **changes: Any) -> RecordTable:
        fields = dict(
            image_ids=self.image_ids, heights=self.heights, widths=self.widths, normalized=self.normalized,
            boxes=self.boxes, labels=self.labels, box_offsets=self.box_offsets, ignore_boxes=self.ignore_boxes,
            ignore_labels=self.ignore_labels, ignore_offsets=self.ignore_offsets, path_bytes=self.path_bytes,
            path_offsets=self.path_offsets, ann_ids=self.ann_ids, ignore_ann_ids=self.ignore_ann_ids, gt=self.gt,
        )  # fmt: skip
        fields.update(changes)
        return RecordTable(**fields)

    def select(self, indices: Iterable[int] | np.ndarray) -> RecordTable:
        """A table of the images ``indices`` (in that order), e.g. those that decode."""
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices, np.int64).reshape(-1)

        def rows(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            counts = offsets[idx + 1] - offsets[idx]
            new = np.zeros(len(idx) + 1, np.int64)
            np.cumsum(counts, out=new[1:])
            starts = np.repeat(offsets[idx] - new[:-1], counts) + np.arange(int(new[-1]))
            return starts, new

        b, bo = rows(self.box_offsets)
        g, go = rows(self.ignore_offsets)
        changes: dict[str, Any] = dict(
            image_ids=self.image_ids[idx], heights=self.heights[idx], widths=self.widths[idx],
            normalized=self.normalized[idx], boxes=self.boxes[b], labels=self.labels[b], box_offsets=bo,
            ignore_boxes=self.ignore_boxes[g], ignore_labels=self.ignore_labels[g], ignore_offsets=go,
            ann_ids=None if self.ann_ids is None else self.ann_ids[b],
            ignore_ann_ids=None if self.ignore_ann_ids is None else self.ignore_ann_ids[g],
        )  # fmt: skip
        if self.path_bytes is not None:
            p, po = rows(self.path_offsets)
            changes.update(path_bytes=self.path_bytes[p], path_offsets=po)
        if self.gt is not None:
            k, ko = rows(self.gt["gt_offsets"])
            changes["gt"] = {key: (ko if key == "gt_offsets" else v[k]) for key, v in self.gt.items()}
        return self._replace(**changes)

    def without_boxes(self, drop: np.ndarray) -> RecordTable:
        """The table without the training boxes where ``drop`` (N,) bool is True (their ann ids go too)."""
        keep = ~np.asarray(drop, bool)
        image_of_box = np.repeat(np.arange(len(self)), self.box_counts())
        offsets = np.zeros(len(self) + 1, np.int64)
        np.cumsum(np.bincount(image_of_box[keep], minlength=len(self)), out=offsets[1:])
        return self._replace(boxes=self.boxes[keep], labels=self.labels[keep], box_offsets=offsets,
                             ann_ids=None if self.ann_ids is None else self.ann_ids[keep])  # fmt: skip

    def set_size(self, index: int, height: int, width: int) -> None:
        """Remember the size of image ``index`` (read from its file)."""
        self.heights[index], self.widths[index] = height, width

    # ----------------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.image_ids)

    def path(self, index: int) -> str | None:
        if self.path_bytes is None:
            return None
        return os.fsdecode(self.path_bytes[self.path_offsets[index] : self.path_offsets[index + 1]].tobytes())

    def paths(self) -> list[str | None]:
        if self.path_bytes is None:
            return [None] * len(self)
        buf, off = self.path_bytes.tobytes(), self.path_offsets.tolist()
        return [os.fsdecode(buf[a:b]) for a, b in zip(off[:-1], off[1:])]

    def size(self, index: int) -> tuple[int | float | None, int | float | None]:
        """(height, width) as stored, None where unknown."""
        return _size_out(self.heights[index]), _size_out(self.widths[index])

    def box_counts(self) -> np.ndarray:
        """(I,) int64 training boxes per image."""
        return np.diff(self.box_offsets)

    def image_boxes(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (n, 4) float32, labels (n,) int64) of image ``index``: read-only views."""
        a, b = self.box_offsets[index], self.box_offsets[index + 1]
        return self.boxes[a:b], self.labels[a:b]

    def coco_anns(self, index: int) -> list[dict[str, Any]] | None:
        if self.gt is None:
            return None
        a, b = self.gt["gt_offsets"][index], self.gt["gt_offsets"][index + 1]
        image_id = int(self.image_ids[index])
        return [
            {"id": i, "image_id": image_id, "category_id": c, "bbox": bbox, "area": area, "iscrowd": crowd}
            for i, c, bbox, area, crowd in zip(
                self.gt["gt_ids"][a:b].tolist(), self.gt["gt_category_ids"][a:b].tolist(),
                self.gt["gt_bbox"][a:b].tolist(), self.gt["gt_area"][a:b].tolist(),
                self.gt["gt_iscrowd"][a:b].tolist(),
            )
        ]  # fmt: skip

    def __getitem__(self, index: int | slice) -> ImageRecord | list[ImageRecord]:
        if isinstance(index, slice):  # as a list of records would answer
            return [self[i] for i in range(len(self))[index]]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"record index must be an integer or a slice, got {type(index).__name__} (see select())")
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"record index {index} out of range for {n} images")
        i = int(index) % n
        a, b = self.box_offsets[i], self.box_offsets[i + 1]
        c, d = self.ignore_offsets[i], self.ignore_offsets[i + 1]
        height, width = self.size(i)
        return ImageRecord(
            path=self.path(i), image_id=int(self.image_ids[i]), boxes=self.boxes[a:b], labels=self.labels[a:b],
            height=height, width=width, normalized=bool(self.normalized[i]),
            ignore_boxes=self.ignore_boxes[c:d], ignore_labels=self.ignore_labels[c:d],
            ann_ids=None if self.ann_ids is None else self.ann_ids[a:b].tolist(),
            ignore_ann_ids=None if self.ignore_ann_ids is None else self.ignore_ann_ids[c:d].tolist(),
            coco_anns=self.coco_anns(i),
        )  # fmt: skip

    def __iter__(self) -> Iterator[ImageRecord]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"RecordTable(images={len(self)}, boxes={len(self.labels)}, ignored={len(self.ignore_labels)})"


def _size_in(v: Any) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except OverflowError:  # an integer beyond float range: as good as infinite for every size check
        return math.inf


def _size_out(v: float) -> int | float | None:
    v = float(v)
    if math.isnan(v):
        return None
    return int(v) if v.is_integer() else v


def drop_duplicate_boxes_table(
    table: RecordTable, report: ProblemReport, where: Callable[[RecordTable, int, int], str] | None = None
) -> RecordTable:
    """:func:`drop_duplicate_boxes` for a :class:`RecordTable`: the table without the repeats (reported as
    ``duplicate_box``, named by ``where(table, image index, box index)``, default the image file and box
    index)."""
    dup, original = _duplicates(table.box_counts(), table.labels, table.boxes)
    if not len(dup):
        return table
    image_of = np.searchsorted(table.box_offsets, dup, side="right") - 1
    for k, k0, i in zip(dup.tolist(), original.tolist(), image_of.tolist()):
        start = int(table.box_offsets[i])
        j, j0 = k - start, k0 - start
        source = where(table, i, j) if where is not None else f"{table.path(i)} box {j}"
        report.add("duplicate_box", source, _duplicate_message(int(table.labels[k]), table.boxes[k].tolist(), j0))
    drop = np.zeros(len(table.labels), bool)
    drop[dup] = True
    return table.without_boxes(drop)
