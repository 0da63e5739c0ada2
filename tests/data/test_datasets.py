"""Readers: COCO json, YOLO txt, VOC xml on crafted data and on the real coco128 sample."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_samples import CAT_IDS, NAMES, OBJECTS

from cspdet.data import DatasetError, DatasetWarning, build_dataset, load_descriptor, yolo_label_path

EXPECTED = {i: objs for i, (_, _, objs) in OBJECTS.items()}


def _check_records(ds, pixel_exact=True):
    assert ds.class_names == NAMES
    assert sorted(ds.image_ids) == [1, 2, 3] or len(ds.image_ids) == 3
    for i in range(len(ds)):
        s = ds.load_sample(i)
        h, w, objs = OBJECTS[[k for k in OBJECTS if f"{k:06d}" in s.path][0]]
        assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8
        assert s.boxes.dtype == np.float32 and s.labels.dtype == np.int64
        want = np.array([o[1:] for o in objs], np.float32).reshape(-1, 4)
        np.testing.assert_allclose(s.boxes, want, atol=1e-3 if pixel_exact else 0.05)
        assert s.labels.tolist() == [o[0] for o in objs]


def test_coco_reader(coco_dir):
    ds = build_dataset(coco_dir / "dataset.yaml", "train")
    assert ds.category_ids == CAT_IDS  # contiguous label -> original id
    assert ds.image_ids == [1, 2, 3]  # background image 3 kept
    assert not ds.skipped
    _check_records(ds)
    # the crowd box is not a training target but is in the evaluation ground truth
    assert len(ds.load_sample(0).boxes) == 2
    gt = ds.coco_gt()
    crowd = [a for a in gt.dataset["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["category_id"] == 7 and crowd[0]["id"] == 99
    assert sorted(gt.getCatIds()) == CAT_IDS and sorted(gt.getImgIds()) == [1, 2, 3]
    assert [ds.category_ids[i] for i in (0, 2)] == [3, 11]


def test_yolo_reader_and_ultralytics_yaml(yolo_dir):
    ds = build_dataset(yolo_dir / "data.yaml", "train")  # no 'format' key: an Ultralytics data YAML
    assert ds.format == "yolo" and ds.category_ids == [0, 1, 2]
    assert ds.image_ids == [1, 2, 3]  # numeric file stems become image ids
    assert not ds.skipped
    _check_records(ds, pixel_exact=False)
    gt = ds.coco_gt()
    assert {im["id"]: (im["height"], im["width"]) for im in gt.dataset["images"]} == {
        k: v[:2] for k, v in OBJECTS.items()
    }
    assert yolo_label_path("/d/images/train/a.jpg").as_posix() == "/d/labels/train/a.txt"


def test_voc_reader(voc_dir):
    ds = build_dataset(voc_dir / "dataset.yaml", "train")
    assert ds.format == "voc"
    assert ds.image_ids == [2008000001, 2008000002, 2008000003]
    assert not ds.skipped
    _check_records(ds)
    assert len(ds.coco_gt().dataset["annotations"]) == 3


def test_voc_difficult_is_eval_only(voc_dir):
    xml = voc_dir / "Annotations" / "2008_000002.xml"
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>"))
    ds = build_dataset(voc_dir / "dataset.yaml", "train")
    assert len(ds.load_sample(1).boxes) == 0
    assert [a["iscrowd"] for a in ds.coco_gt().dataset["annotations"] if a["image_id"] == 2008000002] == [1]


def test_descriptor_dict_and_errors(coco_dir, tmp_path):
    desc = {"format": "coco", "path": str(coco_dir),
            "train": {"images": "images/train", "annotations": "annotations/train.json"}}
    assert len(build_dataset(desc, "train")) == 3
    with pytest.raises(DatasetError, match="no split 'val'"):
        build_dataset(desc, "val")
    with pytest.raises(DatasetError, match="'format' must be one of"):
        build_dataset({**desc, "format": "kitti"}, "train")
    with pytest.raises(DatasetError, match="must be a mapping with 'images'"):
        build_dataset({**desc, "train": {"images": "x", "anotations": "y"}}, "train")
    with pytest.raises(DatasetError, match="dataset root"):
        build_dataset({**desc, "path": str(tmp_path / "nowhere")}, "train")
    with pytest.raises(DatasetError, match="descriptor not found"):
        build_dataset(tmp_path / "missing.yaml", "train")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("format: coco\ntrain: [unclosed\n")
    with pytest.raises(DatasetError, match="malformed YAML"):
        load_descriptor(bad_yaml)
    with pytest.raises(DatasetError, match="differ from the descriptor's names"):
        build_dataset({**desc, "names": ["a", "b", "c"]}, "train")


def test_relative_path_resolves_against_descriptor_dir(coco_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # somewhere else: 'path: .' still means the YAML's folder
    assert len(build_dataset(coco_dir / "dataset.yaml", "train")) == 3


# ------------------------------------------------------------------------------------------ real data


def test_coco128(coco128_root, repo_root):
    desc = repo_root / "datasets" / "coco128.yaml"
    train = build_dataset(desc, "train")
    val = build_dataset(desc, "val")
    assert (len(train), len(val)) == (128, 128)
    assert sum(len(r.labels) for r in train.records) == 929
    assert sum(len(r.labels) for r in val.records) == 898
    assert train.num_classes == 80 and train.category_ids[:5] == [1, 2, 3, 4, 5] and train.category_ids[-1] == 90
    assert train.class_names[0] == "person"
    assert not train.skipped and not val.skipped
    # background images kept
    empty = {r.image_id for r in train.records if not len(r.labels)}
    assert empty == {250, 508}
    # xywh -> xyxy once: the first annotation of image 9 is bbox [1.08, 187.69, 611.59, 285.84]
    s = train.load_sample(train.image_ids.index(9))
    assert s.image.shape == (480, 640, 3)
    assert np.allclose(s.boxes[0], [1.08, 187.69, 612.67, 473.53], atol=1e-3)
    assert train.category_ids[s.labels[0]] == 51
    # every image decodes to 3-channel uint8, including the grayscale one
    shapes = {train.load_sample(i).image.shape[2] for i in range(0, 128, 16)}
    assert shapes == {3}


def test_coco128_gt_scores_perfectly(coco128_root, repo_root):
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    ds = build_dataset(repo_root / "datasets" / "coco128.yaml", "val")
    gt = ds.coco_gt()
    # detections = the training targets mapped back to original ids: the mapping must be lossless
    dets = []
    for rec in ds.records:
        for box, label in zip(rec.boxes.tolist(), rec.labels.tolist()):
            dets.append({"image_id": rec.image_id, "category_id": ds.category_ids[label],
                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": 1.0})
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_coco128_original_json_crowd(coco128_root):
    ann = coco128_root / "extra" / "instances_train2017_coco_original.json"
    if not ann.is_file():
        pytest.skip("extra/ original COCO json not present")
    desc = {"format": "coco", "path": str(coco128_root), "train": {"images": "images/train", "annotations": str(ann)}}
    ds = build_dataset(desc, "train")
    assert sum(len(r.labels) for r in ds.records) == 929  # 939 minus the 10 crowd regions
    assert sum(len(r.ignore_labels) for r in ds.records) == 10
    gt = ds.coco_gt()
    assert sum(a["iscrowd"] for a in gt.dataset["annotations"]) == 10
    assert "segmentation" not in gt.dataset["annotations"][0]


def test_warning_summary_names_counts(coco_dir):
    import json

    p = coco_dir / "annotations" / "train.json"
    data = json.loads(p.read_text())
    data["annotations"][0]["bbox"] = [1, 1, 0, 5]
    p.write_text(json.dumps(data))
    with pytest.warns(DatasetWarning) as rec:
        build_dataset(coco_dir / "dataset.yaml", "train")
    messages = [str(w.message) for w in rec]
    assert any("annotation id 1" in m and "zero or negative" in m for m in messages)
    assert any("skipped 0 images, 1 boxes" in m for m in messages)
