"""tools/check_dataset.py and tools/show_dataset.py: every problem in one pass, exit codes, grids."""

from __future__ import annotations

import json

import cv2
import pytest
from dataset_samples import load_tool


@pytest.fixture(scope="module")
def check():
    return load_tool("check_dataset")


def test_clean_dataset_exits_zero(check, coco_dir, capsys):
    assert check.main([str(coco_dir / "dataset.yaml")]) == 0
    out = capsys.readouterr().out
    assert "CLEAN" in out and "images 3 (background 1), boxes 3" in out and "crowd/difficult (eval only) 1" in out
    assert "red" in out and "classes without boxes" not in out


def test_reports_every_problem_in_one_pass(check, coco_dir, capsys):
    p = coco_dir / "annotations" / "train.json"
    data = json.loads(p.read_text())
    data["annotations"][0]["bbox"] = [1, 1, -4, 5]
    data["annotations"][1]["category_id"] = 1000
    data["annotations"][2]["bbox"] = [500, 500, 4, 4]
    data["images"][1]["width"] = 65  # size mismatch, found by decoding
    p.write_text(json.dumps(data))
    (coco_dir / "images" / "train" / "000000000003.png").write_bytes(b"garbage")
    assert check.main(["--ann", str(p), "--images", str(coco_dir / "images" / "train")]) == 1
    out = capsys.readouterr().out
    for kind in ("bad_box", "unknown_category", "box_outside_image", "size_mismatch", "unreadable_image"):
        assert f"    {kind}" in out, kind
    assert "annotation id 1" in out and "000000000003.png" in out
    assert "5 problem(s) found" in out


def test_yolo_folder_with_orphan_and_bad_line(check, yolo_dir, capsys):
    (yolo_dir / "data.yaml").unlink()
    (yolo_dir / "classes.txt").write_text("red\ngreen\nblue\n")
    (yolo_dir / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with open(yolo_dir / "labels" / "train" / "000000000002.txt", "a") as f:
        f.write("0 0.5\n")
    assert check.main([str(yolo_dir)]) == 1
    out = capsys.readouterr().out
    assert "orphan.txt" in out and "000000000002.txt:2" in out and "2 problem(s) found" in out


def test_voc_folder_and_fatal(check, voc_dir, tmp_path, capsys):
    assert check.main([str(voc_dir), "--no-classes"]) == 0  # the folder's dataset.yaml is used
    (tmp_path / "bad.yaml").write_text("format: coco\npath: .\ntrain: {images: x, annotations: nope.json}\n")
    assert check.main([str(tmp_path / "bad.yaml")]) == 1
    assert "annotation file not found" in capsys.readouterr().out


def test_missing_images_folder_is_named(check, coco_dir, voc_dir, capsys):
    """A split whose images folder does not exist: the message names that folder (not "no usable images")."""
    desc = coco_dir / "dataset.yaml"
    desc.write_text(desc.read_text().replace("images: images/train", "images: images/nowhere"))
    assert check.main([str(desc)]) == 1
    out = capsys.readouterr().out
    assert f"FATAL: {coco_dir / 'images' / 'nowhere'}: images folder not found (the images of train.json) " \
           "[missing_folder]" in out
    assert check.main(["--ann", str(coco_dir / "annotations" / "train.json"), "--images", str(coco_dir / "gone")]) == 1
    assert f"FATAL: {coco_dir / 'gone'}: images folder not found" in capsys.readouterr().out
    import shutil

    shutil.rmtree(voc_dir / "JPEGImages")
    assert check.main([str(voc_dir / "dataset.yaml")]) == 1
    assert f"FATAL: {voc_dir / 'JPEGImages'}: images folder not found (the images of train.txt)" in capsys.readouterr().out


def test_show_dataset_grid(coco_dir, tmp_path):
    show = load_tool("show_dataset")
    out = tmp_path / "grid.png"
    assert show.main([str(coco_dir / "dataset.yaml"), "--augment", "--num", "4", "--img-size", "96", "--out", str(out)]) == 0
    grid = cv2.imread(str(out))
    assert grid is not None and grid.shape[0] > 90 and grid.shape[1] > 3 * 90  # 3 samples in the crafted dataset


def test_class_table_lists_the_dataset_category_ids(check, coco_dir, capsys):
    """The class table shows the dataset's category ids (3, 7, 11 here), as cspdet val's per-class table does,
    not the contiguous labels 0..2."""
    import re

    assert check.main([str(coco_dir / "dataset.yaml")]) == 0
    out = capsys.readouterr().out
    rows = {m[2]: int(m[1]) for m in re.finditer(r"^\s+(\d+) (red|green|blue)\s+\d+\s+\d+$", out, re.M)}
    assert rows == {"red": 3, "green": 7, "blue": 11}
    assert re.search(r"^\s+id class\s+images\s+boxes$", out, re.M)


def test_decoding_every_image_shows_a_bar(coco_dir, capsys):
    from cspdet.data.check import check_dataset

    capsys.readouterr()
    assert check_dataset(coco_dir / "dataset.yaml", progress=True)[0].ok
    err = capsys.readouterr().err
    assert "check train:" in err and "/3 [" in err  # a tqdm bar over the 3 images
    check_dataset(coco_dir / "dataset.yaml", progress=False)
    assert capsys.readouterr().err == ""
    check_dataset(coco_dir / "dataset.yaml")  # default: a bar only on a terminal (pytest's stderr is not one)
    assert capsys.readouterr().err == ""


def _break_images(coco_dir):
    """Image 1 (PNG) cut in half, image 2 replaced by a JPEG without its end marker, image 3 by text."""
    img = coco_dir / "images" / "train"
    png = (img / "000000000001.png").read_bytes()
    (img / "000000000001.png").write_bytes(png[: len(png) // 2])
    _, jpg = cv2.imencode(".jpg", cv2.imread(str(img / "000000000002.png")))
    (img / "000000000002.png").write_bytes(jpg.tobytes()[:-200])
    (img / "000000000003.png").write_bytes(b"not an image at all")


@pytest.mark.parametrize("full_decode", [False, True])
def test_cheap_parallel_check_still_finds_truncated_and_non_image_files(coco_dir, full_decode):
    from cspdet.data.check import check_dataset

    (clean,) = check_dataset(coco_dir / "dataset.yaml", workers=2, full_decode=full_decode)
    assert clean.ok and clean.images == 3
    _break_images(coco_dir)
    (rep,) = check_dataset(coco_dir / "dataset.yaml", workers=2, full_decode=full_decode)
    found = {p.source.rsplit("/", 1)[-1]: p.kind for p in rep.problems}
    assert found["000000000002.png"] == "truncated_image"
    assert found["000000000003.png"] == "unreadable_image"
    assert found["000000000001.png"] in ("unreadable_image", "truncated_image")  # a PNG cut in half
    assert rep.images == 0  # none of them is counted as usable


def test_cheap_check_reads_sizes_from_headers_and_cli_options(check, coco_dir, capsys):
    p = coco_dir / "annotations" / "train.json"
    data = json.loads(p.read_text())
    data["images"][1]["width"] = 65  # the file is 64 wide
    p.write_text(json.dumps(data))
    assert check.main([str(coco_dir / "dataset.yaml"), "--workers", "2"]) == 1
    assert "annotation says 65x80 (WxH) but the image decodes to 64x80" in capsys.readouterr().out
    assert check.main([str(coco_dir / "dataset.yaml"), "--decode"]) == 1
    assert "size_mismatch" in capsys.readouterr().out
    assert check.main([str(coco_dir / "dataset.yaml"), "--decode", "--no-decode"]) == 2
