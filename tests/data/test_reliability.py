"""Issue 24: image paths that lead outside the dataset, undecodable images on every path a run decodes them, and
duplicate boxes as a problem kind of their own."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cspdet.data import DatasetError, DatasetWarning, build_dataset
from cspdet.data.check import check_dataset, format_report
from cspdet.data.loader import build_train_loader, build_val_loader
from cspdet.data.problems import PROBLEM_KINDS, ProblemReport
from cspdet.data.records import ImageRecord, drop_duplicate_boxes

SECRET = "../../../../../../../../../../etc/passwd"


def _edit_json(coco_dir: Path, edit) -> None:
    p = coco_dir / "annotations" / "train.json"
    data = json.loads(p.read_text())
    edit(data)
    p.write_text(json.dumps(data))


def _secret_file(tmp_path: Path) -> Path:
    """A file outside every dataset folder that a malicious annotation could point at."""
    f = tmp_path / "outside" / "secret.png"
    f.parent.mkdir(exist_ok=True)
    f.write_bytes(b"not for the trainer")
    return f


# ------------------------------------------------------------------------------------- paths outside


@pytest.mark.parametrize("name", [SECRET, "/etc/passwd", "../train/../../outside/secret.png"])
def test_coco_file_name_outside_the_image_folder_is_skipped_and_named(coco_dir, name):
    _edit_json(coco_dir, lambda d: d["images"][0].update(file_name=name))
    with pytest.warns(DatasetWarning, match="path_outside_dataset"):
        ds = build_dataset(coco_dir / "dataset.yaml", "train")
    assert len(ds) == 2 and 1 not in ds.image_ids  # the image and its boxes are skipped, nothing was read
    assert ds.skipped.counts == {"path_outside_dataset": 1}
    problem = str(ds.skipped.problems[0])
    assert "train.json image id 1" in problem and repr(name) in problem and "allow_outside" in problem
    with pytest.raises(DatasetError, match="leads outside"):  # strict: one line
        build_dataset(coco_dir / "dataset.yaml", "train", strict=True)
    (report,) = check_dataset(coco_dir / "dataset.yaml")  # the doctor names it
    assert report.counts == {"path_outside_dataset": 1}
    assert "path_outside_dataset" in format_report([report])


def test_paths_inside_the_folder_with_dots_stay_allowed(coco_dir):
    _edit_json(coco_dir, lambda d: d["images"][0].update(file_name="../train/./000000000001.png"))
    ds = build_dataset(coco_dir / "dataset.yaml", "train")
    assert len(ds) == 3 and not ds.skipped


@pytest.mark.parametrize("name", ["", ".", "sub/..", "x" * 300 + ".png"])
def test_a_file_name_that_cannot_be_an_image_file_is_a_bad_entry(coco_dir, name):
    _edit_json(coco_dir, lambda d: d["images"][0].update(file_name=name))
    with pytest.warns(DatasetWarning, match="bad_image_entry"):
        ds = build_dataset(coco_dir / "dataset.yaml", "train")
    assert len(ds) == 2 and ds.skipped.counts == {"bad_image_entry": 1}
    assert "image id 1" in ds.skipped.problems[0].source


def test_allow_outside_in_the_descriptor_reads_them(coco_dir, tmp_path):
    secret = _secret_file(tmp_path)
    _edit_json(coco_dir, lambda d: d["images"][0].update(file_name=str(secret)))
    desc = coco_dir / "dataset.yaml"
    desc.write_text(desc.read_text() + "allow_outside: true\n")
    ds = build_dataset(desc, "train")
    assert ds.records[0].path == str(secret) and "path_outside_dataset" not in ds.skipped.counts
    desc.write_text(desc.read_text().replace("allow_outside: true", "allow_outside: yes please"))
    with pytest.raises(DatasetError, match="'allow_outside' must be true or false"):
        build_dataset(desc, "train")


def test_an_absolute_image_folder_in_the_descriptor_is_trusted(coco_dir, tmp_path):
    """The descriptor is the user's own word: an absolute images folder elsewhere is fine."""
    moved = tmp_path / "elsewhere"
    (coco_dir / "images" / "train").rename(moved)
    desc = coco_dir / "dataset.yaml"
    desc.write_text(desc.read_text().replace("images: images/train", f"images: {moved}"))
    ds = build_dataset(desc, "train")
    assert len(ds) == 3 and not ds.skipped


def test_yolo_image_list_lines_must_stay_inside_the_root(yolo_dir, tmp_path):
    secret = _secret_file(tmp_path)
    (yolo_dir / "list.txt").write_text(f"images/train/000000000001.png\n{secret}\n{SECRET}\n"
                                       f"{yolo_dir / 'images' / 'train' / '000000000002.png'}\n")
    (yolo_dir / "data.yaml").write_text("path: .\ntrain: list.txt\nnames: [red, green, blue]\n")
    with pytest.warns(DatasetWarning, match="leads outside"):
        ds = build_dataset(yolo_dir / "data.yaml", "train")
    assert len(ds) == 2 and ds.skipped.counts == {"path_outside_dataset": 2}
    assert {p.source for p in ds.skipped.problems} == {f"{yolo_dir / 'list.txt'}:2", f"{yolo_dir / 'list.txt'}:3"}


def test_voc_filename_and_image_set_lines_must_stay_inside(voc_dir):
    xml = voc_dir / "Annotations" / "2008_000001.xml"
    xml.write_text(xml.read_text().replace("<filename>2008_000001.png", f"<filename>{SECRET}"))
    sets = voc_dir / "ImageSets" / "Main" / "train.txt"
    sets.write_text(sets.read_text() + "../../../../../../tmp/evil\n")
    with pytest.warns(DatasetWarning):
        ds = build_dataset(voc_dir / "dataset.yaml", "train")
    assert len(ds) == 2 and ds.skipped.counts == {"path_outside_dataset": 2}
    sources = sorted(p.source for p in ds.skipped.problems)
    assert sources == sorted([str(xml), f"{sets}:4"])


def test_training_skips_an_escaping_image_with_a_counted_warning(coco_dir):
    _edit_json(coco_dir, lambda d: d["images"][0].update(file_name=SECRET))
    with pytest.warns(DatasetWarning):
        ds = build_dataset(coco_dir / "dataset.yaml", "train")
    loader = build_train_loader(ds, {"img_size": [64, 64], "mosaic_prob": 0.0, "mixup_prob": 0.0}, 2, seed=0)
    batches = list(loader)
    assert sum(len(b["images"]) for b in batches) == 2
    assert ds.skipped.skipped_images == 1


# ------------------------------------------------------------------------------------- undecodable images


def _break_image(coco_dir: Path, image_id: int) -> Path:
    path = coco_dir / "images" / "train" / f"{image_id:012d}.png"
    path.write_bytes(path.read_bytes()[:40])  # a PNG header without its data
    return path


@pytest.mark.parametrize("workers", [0, 1])
def test_ram_cache_warm_up_reports_an_undecodable_image_once(coco_dir, workers):
    bad = _break_image(coco_dir, 2)
    ds = build_dataset(coco_dir / "dataset.yaml", "train", cache="ram")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = build_train_loader(ds, {"img_size": [64, 64], "mosaic_prob": 0.0}, 3, seed=0, workers=workers)
        n = sum(len(b["images"]) for b in loader)
    assert n == 3  # replaced by another sample
    assert ds.skipped.counts == {"unreadable_image": 1}  # counted once, whether found by warm-up or a worker
    named = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning) and str(bad) in str(w.message)]
    assert len(named) == 1


def test_val_loader_gives_a_placeholder_and_counts(coco_dir):
    _break_image(coco_dir, 1)
    ds = build_dataset(coco_dir / "dataset.yaml", "train")
    with pytest.warns(DatasetWarning, match="grey placeholder"):
        batches = list(build_val_loader(ds, 64, 4, workers=0))
    assert batches[0]["image_ids"].tolist() == [1, 2, 3]  # every image id still reaches the evaluator
    assert ds.skipped.counts == {"unreadable_image": 1}


def test_all_images_undecodable_is_one_line(coco_dir):
    for i in (1, 2, 3):
        _break_image(coco_dir, i)
    ds = build_dataset(coco_dir / "dataset.yaml", "train")
    for workers in (0, 1):
        loader = build_train_loader(ds, {"img_size": [64, 64], "mosaic_prob": 0.0}, 2, seed=0, workers=workers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(DatasetError) as err:
                list(loader)
        assert "failed to decode" in str(err.value) and "\n" not in str(err.value)


def test_logged_val_images_skip_an_undecodable_one(coco_dir):
    """The training run's TensorBoard image logger: the same rule, no traceback mid-training."""
    from cspdet.engine.plots.training import ValImagesLogger
    from cspdet.models import create_detector

    _break_image(coco_dir, 1)
    ds = build_dataset(coco_dir / "dataset.yaml", "train")
    model = create_detector("cspdarknet_nano", num_classes=3, width=0.125)
    logged: list[str] = []
    run = SimpleNamespace(
        cfg=SimpleNamespace(train=SimpleNamespace(log_images=3), eval=SimpleNamespace(img_size=[64, 64])),
        val_set=ds, writer=SimpleNamespace(add_image=lambda tag, *a, **k: logged.append(tag)),
        eval_model=lambda: model, autocast=torch.autocast("cpu", enabled=False), device="cpu", iteration=0,
    )
    with pytest.warns(DatasetWarning, match="000000000001.png"):
        ValImagesLogger.log(run)
    assert logged == ["val_images/1", "val_images/2"]
    assert ds.skipped.counts == {"unreadable_image": 1}


# --------------------------------------------------------------------------------------------- duplicates


def test_five_thousand_identical_coco_boxes_are_counted_and_listed(coco_dir):
    def add(d):
        base = d["annotations"][0]
        d["annotations"] += [dict(base, id=1000 + k) for k in range(5000)]

    _edit_json(coco_dir, add)
    tic = time.perf_counter()
    with pytest.warns(DatasetWarning):
        ds = build_dataset(coco_dir / "dataset.yaml", "train")
    assert time.perf_counter() - tic < 5
    assert ds.skipped.counts == {"duplicate_box": 5000}
    assert len(ds.records[0].labels) == 2 and ds.records[0].ann_ids == [1, 2]  # the first of each kept
    assert "annotation id 1000" in ds.skipped.problems[0].source
    assert "as box 0 of the same image" in ds.skipped.problems[0].message
    (report,) = check_dataset(coco_dir / "dataset.yaml", decode=False)
    assert report.counts == {"duplicate_box": 5000} and report.boxes == 4 - 1 + 0  # 3 boxes (+ 1 crowd, ignored)
    text = format_report([report], max_per_kind=3)
    assert "duplicate_box                 5000  (boxes skipped)" in text
    # the json's own ground truth is scored as given
    assert len(ds.coco_gt().getAnnIds(imgIds=[1])) == 5003


def test_same_box_with_another_class_is_not_a_duplicate(coco_dir):
    _edit_json(coco_dir, lambda d: d["annotations"].append(dict(d["annotations"][0], id=500, category_id=7)))
    ds = build_dataset(coco_dir / "dataset.yaml", "train")
    assert not ds.skipped and len(ds.records[0].labels) == 3


def test_voc_duplicate_boxes(voc_dir):
    xml = voc_dir / "Annotations" / "2008_000001.xml"
    text = xml.read_text()
    obj = text[text.index("<object>"):text.index("</object>") + len("</object>")]
    xml.write_text(text.replace("</annotation>", obj * 2 + "</annotation>"))
    with pytest.warns(DatasetWarning, match="duplicate_box"):
        ds = build_dataset(voc_dir / "dataset.yaml", "train")
    assert ds.skipped.counts == {"duplicate_box": 2}
    assert len(ds.records[0].labels) == 2


def test_drop_duplicate_boxes_is_exact_and_keeps_the_first():
    rng = np.random.default_rng(0)
    records = []
    for i in range(50):
        boxes = rng.uniform(0, 50, (20, 4)).astype(np.float32)
        boxes[:, 2:] += boxes[:, :2] + 1
        labels = rng.integers(0, 3, 20)
        boxes[5], labels[5] = boxes[2], labels[2]  # a repeat
        boxes[6], labels[6] = boxes[2], (labels[2] + 1) % 3  # same box, another class
        boxes[7] = np.nextafter(boxes[2], np.float32(100)); labels[7] = labels[2]  # noqa: E702 - nearly the same
        records.append(ImageRecord(path=f"img{i}.jpg", image_id=i, boxes=boxes, labels=labels.astype(np.int64)))
    report = ProblemReport(warn=False)
    assert drop_duplicate_boxes(records, report) == 50
    assert all(len(r.labels) == 19 for r in records)
    assert report.problems[0].source == "img0.jpg box 5"
    assert PROBLEM_KINDS["duplicate_box"] == "box"
