"""Bad input: every case is skipped with a warning naming the file (and annotation / line) and counted;
strict mode raises the same message; nothing crashes mid-epoch."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from cspdet.data import DatasetError, DatasetWarning, ImageReadError, build_dataset, build_train_loader, build_val_loader


def _edit_json(coco_dir, fn):
    p = coco_dir / "annotations" / "train.json"
    data = json.loads(p.read_text())
    fn(data)
    p.write_text(json.dumps(data))  # NaN is written as the JSON extension literal NaN, as other tools do


def _ann(data, ann_id):
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def _assert_warned(record, *patterns: str) -> None:
    """Every pattern matches one of the recorded warnings and every warning matches one of the patterns: the
    per-file warning and the summary that follows it are both expected, and nothing else was warned."""
    import re

    messages = [str(w.message) for w in record]
    for pattern in patterns:
        assert any(re.search(pattern, m) for m in messages), (pattern, messages)
    for m in messages:
        assert any(re.search(p, m) for p in patterns), m


COCO_CASES = {
    # name: (mutation, expected kind, text that must appear in the message, images left, boxes left)
    "missing_image": (lambda d: d["images"][1].update(file_name="gone.png"), "missing_image", "gone.png", 2, 2),
    "box_outside": (lambda d: _ann(d, 1).update(bbox=[500, 500, 10, 10]), "box_outside_image", "annotation id 1", 3, 2),
    "zero_size": (lambda d: _ann(d, 2).update(bbox=[5, 5, 0, 10]), "bad_box", "annotation id 2", 3, 2),
    "negative_size": (lambda d: _ann(d, 2).update(bbox=[5, 5, 10, -3]), "bad_box", "zero or negative", 3, 2),
    "nan": (lambda d: _ann(d, 3).update(bbox=[math.nan, 1, 5, 5]), "bad_box", "NaN", 3, 2),
    "bbox_not_numbers": (lambda d: _ann(d, 3).update(bbox=[1, 2, "3"]), "bad_box", "annotation id 3", 3, 2),
    "unknown_category": (lambda d: _ann(d, 1).update(category_id=42), "unknown_category", "category id 42", 3, 2),
    "unknown_image": (lambda d: _ann(d, 1).update(image_id=777), "unknown_image_ref", "image id 777", 3, 2),
    "duplicate_image_id": (lambda d: d["images"][2].update(id=1), "duplicate_image", "image id 1", 2, 3),
    "duplicate_ann_id": (lambda d: _ann(d, 3).update(id=1), "duplicate_annotation", "annotation id 1", 3, 2),
    "clipped_box": (lambda d: _ann(d, 1).update(bbox=[-5, 8, 45, 22]), "box_clipped", "extends outside", 3, 3),
    # ids of the wrong JSON type (a list is unhashable: this used to be a TypeError traceback)
    "category_id_list": (lambda d: _ann(d, 1).update(category_id=[3]), "unknown_category", "annotation id 1", 3, 2),
    "image_id_list": (lambda d: _ann(d, 2).update(image_id=[1]), "unknown_image_ref", "annotation id 2", 3, 2),
    "ann_id_list": (lambda d: _ann(d, 3).update(id=[3], category_id=99), "unknown_category", "annotations[2]", 3, 2),
}


@pytest.mark.parametrize("case", sorted(COCO_CASES))
def test_coco_bad_input_skip_warn_count_and_strict(coco_dir, case):
    mutate, kind, text, n_images, n_boxes = COCO_CASES[case]
    _edit_json(coco_dir, mutate)
    with pytest.warns(DatasetWarning) as record:
        ds = build_dataset(coco_dir / "dataset.yaml", "train")
    assert ds.skipped.counts == {kind: 1}
    problem = ds.skipped.problems[0]
    assert text in str(problem)
    assert any(str(problem) in str(w.message) for w in record)
    assert any("skipped" in str(w.message) and "cspdet check" in str(w.message) for w in record)
    assert len(ds) == n_images
    assert sum(len(r.labels) for r in ds.records) == n_boxes
    with pytest.raises(DatasetError) as err:
        build_dataset(coco_dir / "dataset.yaml", "train", strict=True)
    assert str(err.value) == str(problem)


def test_clipped_box_is_clipped(coco_dir):
    _edit_json(coco_dir, lambda d: _ann(d, 1).update(bbox=[-5, 8, 45, 22]))
    with pytest.warns(DatasetWarning):
        ds = build_dataset(coco_dir / "dataset.yaml", "train")
    assert ds.load_sample(0).boxes[0].tolist() == [0, 8, 40, 30]


@pytest.mark.parametrize(
    "content,match",
    [("{not json", "malformed JSON at line 1"), ("[1, 2]", "expected a JSON object"),
     ('{"images": [], "annotations": []}', "missing or non-list 'categories'")],
)
def test_coco_malformed_json_is_one_clear_error(coco_dir, content, match):
    (coco_dir / "annotations" / "train.json").write_text(content)
    with pytest.raises(DatasetError, match=match) as err:
        build_dataset(coco_dir / "dataset.yaml", "train")
    assert "train.json" in str(err.value)


@pytest.mark.parametrize(
    "text,match",
    [("format: coco\npath: .\ntrain: {images: [unclosed\n", r"dataset.yaml:4: malformed YAML at column 1"),
     ("format: coco\n  path: .\n", r"dataset.yaml:2: malformed YAML at column 7"),
     ("- a list\n", "must be a YAML mapping")],
)
def test_malformed_descriptor_yaml_names_file_and_line(coco_dir, text, match):
    (coco_dir / "dataset.yaml").write_text(text)
    with pytest.raises(DatasetError, match=match) as err:
        build_dataset(coco_dir / "dataset.yaml", "train")
    assert "\n" not in str(err.value)  # one line, not PyYAML's multi-line report


def test_empty_dataset(coco_dir):
    _edit_json(coco_dir, lambda d: d.update(images=[], annotations=[]))
    with pytest.raises(DatasetError, match="no usable images"):
        build_dataset(coco_dir / "dataset.yaml", "train")


# ------------------------------------------------------------------------------------------------ YOLO

YOLO_CASES = {
    "malformed_line": ("0 0.5 0.5 abc 0.1", "malformed_line", "not numbers"),
    "field_count": ("0 0.5 0.5 0.1", "malformed_line", "4 values"),
    "class_out_of_range": ("7 0.5 0.5 0.1 0.1", "unknown_category", "class 7"),
    "class_not_integer": ("1.5 0.5 0.5 0.1 0.1", "unknown_category", "class 1.5"),
    "nan": ("0 nan 0.5 0.1 0.1", "bad_box", "NaN"),
    "zero_size": ("0 0.5 0.5 0 0.1", "bad_box", "zero or negative"),
    "outside": ("0 1.5 1.5 0.1 0.1", "box_outside_image", "outside"),
    "duplicate": (None, "duplicate_box", "same class and box"),
}


@pytest.mark.parametrize("case", sorted(YOLO_CASES))
def test_yolo_bad_lines(yolo_dir, case):
    line, kind, text = YOLO_CASES[case]
    label = yolo_dir / "labels" / "train" / "000000000001.txt"
    original = label.read_text().splitlines()
    line = original[0] if line is None else line
    label.write_text("\n".join(original + [line]) + "\n")
    with pytest.warns(DatasetWarning):
        ds = build_dataset(yolo_dir / "data.yaml", "train")
    assert ds.skipped.counts == {kind: 1}
    assert f"{label}:3" in str(ds.skipped.problems[0]) and text in str(ds.skipped.problems[0])
    assert len(ds.records[0].labels) == 2  # the good lines of that file survive
    with pytest.raises(DatasetError, match="000000000001.txt:3"):
        build_dataset(yolo_dir / "data.yaml", "train", strict=True)


def test_yolo_unreadable_label_file_skips_the_image(yolo_dir):
    """Not kept as background: its objects would be trained on as background."""
    label = yolo_dir / "labels" / "train" / "000000000001.txt"
    label.write_bytes(b"\xff\xfe\x00 not utf-8")
    with pytest.warns(DatasetWarning) as record:
        ds = build_dataset(yolo_dir / "data.yaml", "train")
    _assert_warned(record, "000000000001.txt: cannot read label file", r"^data train: skipped 1 images")
    assert ds.skipped.counts == {"malformed_annotation_file": 1} and ds.skipped.skipped_images == 1
    assert len(ds) == 2 and not any(r.path.endswith("000000000001.png") for r in ds.records)
    with pytest.raises(DatasetError, match="000000000001.txt: cannot read label file"):
        build_dataset(yolo_dir / "data.yaml", "train", strict=True)


def test_yolo_no_labels_at_all_is_a_layout_error(yolo_dir):
    import shutil

    shutil.rmtree(yolo_dir / "labels")
    with pytest.raises(DatasetError, match="none of the 3 images has a label file; expected e.g."):
        build_dataset(yolo_dir / "data.yaml", "train")


def test_yolo_missing_names(yolo_dir):
    (yolo_dir / "data.yaml").write_text("format: yolo\npath: .\ntrain: images/train\n")
    with pytest.raises(DatasetError, match="needs 'names'"):
        build_dataset(yolo_dir / "data.yaml", "train")


# ------------------------------------------------------------------------------------------------- VOC


def test_voc_bad_files(voc_dir):
    (voc_dir / "Annotations" / "2008_000001.xml").write_text("<annotation><size>")
    xml2 = voc_dir / "Annotations" / "2008_000002.xml"
    xml2.write_text(xml2.read_text().replace("<name>green</name>", "<name>purple</name>"))
    (voc_dir / "Annotations" / "2008_000003.xml").unlink()
    with pytest.warns(DatasetWarning):
        ds = build_dataset(voc_dir / "dataset.yaml", "train")
    assert ds.skipped.counts == {"malformed_annotation_file": 1, "unknown_category": 1, "missing_annotation_file": 1}
    assert "class name 'purple'" in str(ds.skipped.problems[1])
    assert len(ds) == 1 and len(ds.records[0].labels) == 0
    with pytest.raises(DatasetError, match="2008_000001.xml: malformed XML"):
        build_dataset(voc_dir / "dataset.yaml", "train", strict=True)


def test_voc_image_listed_twice(voc_dir):
    sets = voc_dir / "ImageSets" / "Main" / "train.txt"
    sets.write_text(sets.read_text() + "2008_000001\n")
    with pytest.warns(DatasetWarning) as record:
        ds = build_dataset(voc_dir / "dataset.yaml", "train")
    _assert_warned(record, r"train.txt:4: image '2008_000001' already listed at train.txt:1",
                   r"^dataset train: skipped 1 images")
    assert ds.skipped.counts == {"duplicate_image": 1} and len(ds) == 3


# ------------------------------------------------------------------------------ images bad at load time


@pytest.mark.parametrize("content", [b"", b"this is not an image", "truncate"])
def test_unreadable_image_at_load_time(coco_dir, content):
    path = coco_dir / "images" / "train" / "000000000002.png"
    if content == "truncate":
        jpg = path.with_suffix(".jpg")
        import cv2

        cv2.imwrite(str(jpg), np.zeros((64, 64, 3), np.uint8))
        data = jpg.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    ds = build_dataset(coco_dir / "dataset.yaml", "train")  # not decoded while reading annotations
    with pytest.raises(ImageReadError) as err:
        ds.load_sample(1)
    assert "000000000002.png" in str(err.value)
    # the training loader replaces it (warning + count), never raises mid-epoch
    loader = build_train_loader(ds, {"img_size": [64, 64], "workers": 0}, batch_size=3, seed=0)
    with pytest.warns(DatasetWarning) as record:
        batches = [b for _ in range(2) for b in loader]
    _assert_warned(record, "000000000002.png", r"^1 image problem\(s\) met while loading this pass")
    assert all(b["images"].shape == (3, 3, 64, 64) for b in batches)
    assert ds.skipped.counts.get(err.value.kind, 0) >= 1
    # the val loader keeps the image id with a grey placeholder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val = next(iter(build_val_loader(ds, 64, batch_size=3, workers=0)))
    assert val["image_ids"].tolist() == [1, 2, 3]
    assert not val["target_mask"][1].any() and int(val["images"][1].float().std()) == 0


def _break_image(coco_dir):
    path = coco_dir / "images" / "train" / "000000000002.png"
    path.write_bytes(b"this is not an image")
    return path


def test_load_failures_in_workers_reach_the_main_process(coco_dir):
    """Workers decode in their own copy of the dataset; the problem travels back with the batch and is
    counted once (not once per worker) in the main process, with a warning and an end-of-pass summary."""
    _break_image(coco_dir)
    ds = build_dataset(coco_dir / "dataset.yaml", "train")
    loader = build_train_loader(ds, {"img_size": [64, 64], "workers": 2}, batch_size=3, seed=0)
    with pytest.warns(DatasetWarning) as record:
        for epoch in range(2):
            loader.dataset.set_epoch(epoch)
            batches = list(loader)
    assert all(set(b) == {"images", "targets", "target_mask", "image_ids", "ratios", "orig_sizes"} for b in batches)
    assert ds.skipped.counts == {"unreadable_image": 1}
    assert "000000000002.png: cannot decode" in str(ds.skipped.problems[0])
    messages = [str(w.message) for w in record]
    assert any("000000000002.png" in m for m in messages)
    assert any("skipped 1 images" in m and "cspdet check" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val = [b for b in build_val_loader(ds, 64, batch_size=2, workers=2)]
    assert sum(len(b["image_ids"]) for b in val) == 3 and ds.skipped.counts == {"unreadable_image": 1}


@pytest.mark.parametrize("workers", [0, 2])
def test_strict_raises_at_load_time_in_the_main_process(coco_dir, workers):
    path = _break_image(coco_dir)
    ds = build_dataset(coco_dir / "dataset.yaml", "train", strict=True)  # annotations are fine
    loader = build_train_loader(ds, {"img_size": [64, 64], "workers": workers, "mosaic_prob": 0.0}, batch_size=3, seed=0)
    with pytest.raises(DatasetError) as err:
        list(loader)
    # the precise one-line message, not a worker traceback wrapped into the exception
    assert str(err.value).startswith(f"{path}: cannot decode") and "Traceback" not in str(err.value)
