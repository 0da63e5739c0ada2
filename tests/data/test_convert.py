"""Format conversions COCO <-> YOLO <-> VOC, round-trip tested (tools/convert_dataset.py)."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_samples import load_tool

from cspdet.data import build_dataset
from cspdet.data.convert import write_dataset


def _boxes_by_image(ds):
    out = {}
    for i, rec in enumerate(ds.records):
        s = ds.load_sample(i)
        out[rec.image_id] = (s.boxes, [ds.category_ids[lab] for lab in s.labels], s.image.shape)
    return out


def _assert_same(a, b, atol):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k][0], b[k][0], atol=atol)
        assert a[k][1] == b[k][1] and a[k][2] == b[k][2]


@pytest.mark.parametrize("chain", [("yolo", "coco"), ("voc", "coco"), ("voc", "yolo", "coco"), ("yolo", "voc")])
def test_round_trips(coco_dir, tmp_path, chain):
    src = build_dataset(coco_dir / "dataset.yaml", "train")
    ds = src
    for k, fmt in enumerate(chain):
        out = write_dataset({"train": ds}, tmp_path / f"step{k}_{fmt}", fmt)
        ds = build_dataset(out["descriptor"], "train")
        assert ds.format == fmt and ds.class_names == src.class_names
    assert ds.category_ids == src.category_ids  # COCO ids survive via the descriptor's category_ids
    _assert_same(_boxes_by_image(src), _boxes_by_image(ds), atol=0.01)
    if "yolo" not in chain:  # YOLO cannot carry crowd boxes; COCO <-> VOC keeps them (as difficult)
        crowd = [a for a in ds.coco_gt().dataset["annotations"] if a["iscrowd"]]
        assert len(crowd) == 1


def test_convert_tool_on_coco128(coco128_root, repo_root, tmp_path):
    tool = load_tool("convert_dataset")
    assert tool.main([str(repo_root / "datasets" / "coco128.yaml"), "--to", "yolo", "--out", str(tmp_path / "y"),
                      "--split", "val"]) == 0
    back = tmp_path / "c"
    assert tool.main([str(tmp_path / "y" / "dataset.yaml"), "--to", "coco", "--out", str(back)]) == 0
    a = build_dataset(repo_root / "datasets" / "coco128.yaml", "val")
    b = build_dataset(back / "dataset.yaml", "val")
    assert a.image_ids == sorted(a.image_ids) == b.image_ids  # numeric file stems keep COCO image ids
    assert b.category_ids == a.category_ids
    ga, gb = a.coco_gt(), b.coco_gt()
    for image_id in a.image_ids[:20]:
        ba = sorted((x["category_id"], *np.round(x["bbox"], 1)) for x in ga.imgToAnns[image_id])
        bb = sorted((x["category_id"], *np.round(x["bbox"], 1)) for x in gb.imgToAnns[image_id])
        assert len(ba) == len(bb)
        np.testing.assert_allclose(np.array(ba, float).reshape(-1, 5), np.array(bb, float).reshape(-1, 5), atol=0.11)


def test_convert_skips_unreadable_images_with_a_warning(yolo_dir, tmp_path):
    """A YOLO image whose size cannot be read is reported and left out, not a traceback."""
    from cspdet.data import DatasetWarning
    from cspdet.data.convert import write_dataset

    (yolo_dir / "images" / "train" / "000000000002.png").write_bytes(b"not an image")
    ds = build_dataset(yolo_dir / "data.yaml", "train")
    with pytest.warns(DatasetWarning, match="000000000002.png: cannot decode"):
        stats = write_dataset({"train": ds}, tmp_path / "out", "voc", images="copy")
    assert stats["train"]["images"] == 2 and ds.skipped.counts == {"unreadable_image": 1}
    back = build_dataset(stats["descriptor"], "train")
    assert len(back) == 2


def test_yolo_export_has_an_absolute_path(coco_dir, tmp_path, monkeypatch):
    """The written dataset.yaml names its root absolutely (Ultralytics resolves a relative ``path`` against its
    own datasets folder), so it loads from any working directory, with a relative --out too."""
    import yaml

    monkeypatch.chdir(tmp_path)
    tool = load_tool("convert_dataset")
    assert tool.main([str(coco_dir / "dataset.yaml"), "--to", "yolo", "--out", "rel_yolo"]) == 0
    desc = yaml.safe_load((tmp_path / "rel_yolo" / "dataset.yaml").read_text())
    assert desc["path"] == str((tmp_path / "rel_yolo").resolve())
    # the keys an Ultralytics data YAML has: path, split -> image folder (relative to path), names
    assert desc["train"] == "images/train" and desc["names"] == ["red", "green", "blue"]
    assert (tmp_path / "rel_yolo" / desc["train"]).is_dir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ds = build_dataset(tmp_path / "rel_yolo" / "dataset.yaml", "train")
    assert len(ds) == 3 and ds.category_ids == [3, 7, 11]


def test_conversion_shows_a_bar_per_split(yolo_dir, tmp_path, capsys):
    ds = build_dataset(yolo_dir / "data.yaml", "train")  # YOLO stores no image sizes: they are read first
    capsys.readouterr()
    write_dataset({"train": ds}, tmp_path / "out", "coco", progress=True)
    err = capsys.readouterr().err
    assert "sizes train:" in err and "convert train:" in err and "/3 [" in err
