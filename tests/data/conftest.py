"""Factories for tiny crafted datasets (COCO / YOLO / VOC) written into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataset_samples import CAT_IDS, CLASS_COLORS, NAMES, OBJECTS, draw_image, load_tool  # noqa: F401

REPO = Path(__file__).resolve().parents[2]

@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    """tmp_path/coco: images/train/*.png + annotations/train.json + dataset.yaml (3 images, 1 crowd box)."""
    root = tmp_path / "coco"
    images, anns = [], []
    ann_id = 1
    for image_id, (h, w, objs) in OBJECTS.items():
        name = f"{image_id:012d}.png"
        draw_image(root / "images" / "train" / name, h, w, objs)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        for label, x1, y1, x2, y2 in objs:
            anns.append({"id": ann_id, "image_id": image_id, "category_id": CAT_IDS[label],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
            ann_id += 1
    anns.append({"id": 99, "image_id": 1, "category_id": CAT_IDS[1], "bbox": [0, 40, 20, 20], "area": 400, "iscrowd": 1})
    cats = [{"id": c, "name": n} for c, n in zip(CAT_IDS, NAMES)]
    (root / "annotations").mkdir(parents=True)
    write_json(root / "annotations" / "train.json", {"images": images, "annotations": anns, "categories": cats})
    (root / "dataset.yaml").write_text(
        "format: coco\npath: .\ntrain:\n  images: images/train\n  annotations: annotations/train.json\n"
    )
    return root


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data))


@pytest.fixture
def yolo_dir(tmp_path: Path) -> Path:
    """tmp_path/yolo in the Ultralytics layout with data.yaml (names as a mapping)."""
    root = tmp_path / "yolo"
    for image_id, (h, w, objs) in OBJECTS.items():
        name = f"{image_id:012d}"
        draw_image(root / "images" / "train" / f"{name}.png", h, w, objs)
        if objs:
            lines = [f"{lab} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                     for lab, x1, y1, x2, y2 in objs]
            (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (root / "labels" / "train" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/train\nnames:\n  0: red\n  1: green\n  2: blue\n")
    return root


@pytest.fixture
def voc_dir(tmp_path: Path) -> Path:
    """tmp_path/voc with JPEGImages (png), Annotations, ImageSets/Main/train.txt and dataset.yaml."""
    root = tmp_path / "voc"
    ids = []
    for image_id, (h, w, objs) in OBJECTS.items():
        stem = f"2008_{image_id:06d}"
        ids.append(stem)
        draw_image(root / "JPEGImages" / f"{stem}.png", h, w, objs)
        objects = "".join(
            f"<object><name>{NAMES[lab]}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin>"
            f"<ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for lab, x1, y1, x2, y2 in objs
        )
        xml = f"<annotation><filename>{stem}.png</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}</annotation>"
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(xml)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids) + "\n")
    (root / "dataset.yaml").write_text(
        "format: voc\npath: .\ntrain: ImageSets/Main/train.txt\nnames: [red, green, blue]\n"
    )
    return root
