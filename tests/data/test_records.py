"""The flat-array record table: the vectorised COCO pass equals the one-annotation-at-a-time reader (records,
problems and their order, ground truth), and the table behaves as the list of records it replaces."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

from cspdet.data import coco_format
from cspdet.data.problems import DatasetError, ProblemReport
from cspdet.data.record_table import RecordTable
from cspdet.data.records import ImageRecord


def _messy(root):
    """A COCO json with one annotation of every kind the reader checks, interleaved with good ones."""
    (root / "img").mkdir()
    images = []
    for i in range(1, 9):
        images.append({"id": i * 10, "file_name": f"{i:04d}.jpg", "height": 100 + i, "width": 120 + i})
        if i != 7:  # image 70 has no file: its annotations go silently (the image itself is reported)
            (root / "img" / f"{i:04d}.jpg").touch()
    images[2].pop("height")  # size unknown: boxes are not clipped
    images[3]["width"] = 0.5  # a unit-square image (tolerance 1e-3)
    images.append(dict(images[0], file_name="dup.jpg"))  # duplicate image id
    cats = [{"id": c, "name": f"c{c}"} for c in (5, 2, 9)]
    anns, k = [], 0

    def add(image_id, bbox, cat=2, **extra):
        nonlocal k
        k += 1
        anns.append({"id": extra.pop("id", k), "image_id": image_id, "category_id": cat, "bbox": bbox,
                     "area": 1.5 * k, "iscrowd": 0, **extra})

    rng = np.random.default_rng(0)
    for _ in range(40):
        image_id = int(rng.choice([10, 20, 30, 50, 60, 80]))
        x, y = rng.uniform(0, 60, 2).round(2).tolist()
        add(image_id, [x, y, float(rng.uniform(1, 40)), 7], cat=int(rng.choice([5, 2, 9])))
    add(10, [1, 2, 3, 4], id=3)  # duplicate annotation id
    add(999, [1, 2, 3, 4])  # unknown image
    add(10, [1, 2, 3, 4], cat=4)  # unknown category
    add(20, [1, math.nan, 3, 4])
    add(20, [1, 2, -3, 4])
    add(20, [500, 500, 3, 4])  # outside the image
    add(20, [-5, 2, 30, 4])  # clipped
    add(20, [-0.5, 2, 30, 4])  # within the tolerance: clipped silently
    add(30, [-50, -50, 500, 400])  # no size: kept as given
    add(40, [0.1, 0.1, 0.3, 0.3])  # unit square
    add(40, [0.1, 0.1, 0.5, 0.3])  # sticks out of the unit square
    add(70, [1, 2, 3, 4])  # image without a file
    add(10, [5, 6, 7, 8], iscrowd=1)
    add(50, [5, 6, 7, 8], iscrowd=True, segmentation=[[1, 2, 3]])
    add(60, [5, 6, 7, 8], area=None)
    add(60, [5, 6, 7, 8], area="big")
    add(60, [5, 6, 7, 9], area=math.nan)  # a number (NaN): kept as given
    anns.insert(5, anns.pop())  # out of image order
    return {"images": images, "annotations": anns, "categories": cats}


def _read(data, root, strict=False, slow=False, monkeypatch=None):
    if slow:
        monkeypatch.setattr(coco_format, "_annotations_vectorised", lambda *a: None)
    report = ProblemReport(name="t", warn=False, strict=strict)
    table, names, ids = coco_format.parse_coco(json.loads(json.dumps(data)), "t.json", root / "img", report)
    monkeypatch.undo() if slow else None
    return table, report, names, ids


def _same(a: RecordTable, b: RecordTable):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for f in ("path", "image_id", "height", "width", "normalized", "ann_ids", "ignore_ann_ids"):
            assert getattr(ra, f) == getattr(rb, f), f
        assert json.dumps(ra.coco_anns, sort_keys=True) == json.dumps(rb.coco_anns, sort_keys=True)  # NaN == NaN
        for f in ("boxes", "labels", "ignore_boxes", "ignore_labels"):
            x, y = getattr(ra, f), getattr(rb, f)
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y, equal_nan=True), f


def test_vectorised_coco_pass_equals_the_one_at_a_time_reader(tmp_path, monkeypatch):
    data = _messy(tmp_path)
    real, used = coco_format._annotations_vectorised, []
    monkeypatch.setattr(coco_format, "_annotations_vectorised", lambda *a: used.append(real(*a)) or used[-1])
    fast, fast_report, names, ids = _read(data, tmp_path)
    monkeypatch.undo()
    assert isinstance(used[0], RecordTable)  # the vectorised pass read it
    slow, slow_report, names2, ids2 = _read(data, tmp_path, slow=True, monkeypatch=monkeypatch)
    assert (names, ids) == (names2, ids2) == (["c2", "c5", "c9"], [2, 5, 9])
    assert [str(p) for p in fast_report.problems] == [str(p) for p in slow_report.problems]
    kinds = set(fast_report.counts)
    assert {"duplicate_annotation", "unknown_image_ref", "unknown_category", "bad_box", "box_outside_image",
            "box_clipped", "missing_image", "duplicate_image"} <= kinds
    _same(fast, slow)
    monkeypatch.setattr(coco_format, "_CHUNK", 7)  # chunk boundaries change nothing
    chunked, chunked_report, *_ = _read(data, tmp_path)
    monkeypatch.undo()
    _same(chunked, slow)
    assert [str(p) for p in chunked_report.problems] == [str(p) for p in slow_report.problems]
    assert len(fast.ignore_labels) == 2 and fast.gt is not None and len(fast.gt["gt_ids"]) == len(slow.gt["gt_ids"])
    # strict mode stops at the same first problem
    with pytest.raises(DatasetError) as a:
        _read(data, tmp_path, strict=True)
    with pytest.raises(DatasetError) as b:
        _read(data, tmp_path, strict=True, slow=True, monkeypatch=monkeypatch)
    assert str(a.value) == str(b.value)


def test_table_is_the_list_of_records(tmp_path):
    records = [
        ImageRecord(path=f"/d/{i}.jpg", image_id=i + 1, boxes=np.full((i, 4), i, np.float32),
                    labels=np.arange(i, dtype=np.int64), height=None if i == 1 else 10 * i + 1, width=7,
                    normalized=i == 2)
        for i in range(4)
    ]  # fmt: skip
    table = RecordTable.from_records(records)
    assert len(table) == 4 and table.box_counts().tolist() == [0, 1, 2, 3]
    assert [r.path for r in table] == table.paths() == [r.path for r in records]
    assert [r.image_id for r in table[1::2]] == [2, 4]  # slices as on a list
    assert table[-1].image_id == 4 and table[1].height is None and table[3].height == 31
    assert table[2].normalized and np.array_equal(table[3].boxes, records[3].boxes)
    with pytest.raises(ValueError):
        table[3].boxes[0, 0] = 1  # views into the shared arrays are read-only
    with pytest.raises(IndexError):
        table[4]
    sub = table.select([3, 0])
    assert [r.image_id for r in sub] == [4, 1] and sub.box_counts().tolist() == [3, 0] and sub[0].path == "/d/3.jpg"
    drop = np.zeros(6, bool)
    drop[[1, 5]] = True  # a box of image 2 and one of image 3
    assert table.without_boxes(drop).box_counts().tolist() == [0, 1, 1, 2]
    table.set_size(1, 5, 6)
    assert table.size(1) == (5, 6)
    # a worker gets the table as a handful of arrays, not one object per image
    assert len(pickle.dumps(table)) < 2000
