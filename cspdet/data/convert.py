"""Write a :class:`DetectionDataset` in COCO, YOLO or VOC layout (used by ``cspdet convert``).

Each writer produces a complete dataset folder plus a descriptor YAML (``dataset.yaml``, its ``path`` absolute)
that :func:`cspdet.data.build_dataset` reads back; a YOLO one is also an Ultralytics data YAML:

- ``coco``: ``images/<split>/``, ``annotations/instances_<split>.json`` (original image and category ids;
  crowd / VOC-difficult boxes written with ``iscrowd: 1``).
- ``yolo``: ``images/<split>/``, ``labels/<split>/<stem>.txt`` (``class cx cy w h``, normalised, 6 decimals)
  and the descriptor with ``names`` and ``category_ids`` (so COCO ids survive a round trip). YOLO has no
  notion of crowd/difficult: those boxes are left out (counted in the returned stats).
- ``voc``: ``JPEGImages/``, ``Annotations/<stem>.xml`` (1-based inclusive pixel indices, crowd ->
  ``<difficult>1``), ``ImageSets/Main/<split>.txt``.

Images are linked (symlink), copied or left where they are (``images="none"``: the descriptor then points
at the original files, COCO only). Image ids survive conversion when file stems are numeric (see
``_stable_image_ids`` in datasets.py); annotation ids are renumbered.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..fileio import atomic_write, make_dirs
from ..progress import progress_bar
from .datasets import DetectionDataset
from .image_io import ImageReadError, image_size
from .records import ImageRecord

__all__ = ["write_dataset", "FORMATS"]

FORMATS = ("coco", "yolo", "voc")


def _size(rec: ImageRecord) -> tuple[int, int]:
    if rec.height is None or rec.width is None:
        rec.height, rec.width = image_size(rec.path)
    return rec.height, rec.width


def _readable_records(ds: DetectionDataset, progress: bool | None = False, split: str = "") -> list[ImageRecord]:
    """The records whose image size is stored or readable from the file header. Others (missing, corrupt
    or non-image files) are reported in ``ds.skipped`` (a warning, or :class:`DatasetError` in strict mode)
    and left out: every writer needs the size to place the boxes."""
    out = []
    records = ds.records
    if any(rec.height is None or rec.width is None for rec in records):  # sizes are read from the files
        records = progress_bar(records, progress, f"sizes {split}", total=len(ds.records))
    for i, rec in enumerate(records):
        try:
            _size(rec)
        except ImageReadError as err:
            ds.report_load_failure(i, err)
            continue
        out.append(rec)
    return out


def _pixel_boxes(rec: ImageRecord, crowd: bool = False) -> tuple[np.ndarray, np.ndarray]:
    boxes, labels = (rec.ignore_boxes, rec.ignore_labels) if crowd else (rec.boxes, rec.labels)
    if rec.normalized and len(boxes):
        h, w = _size(rec)
        boxes = boxes * np.array([w, h, w, h], np.float32)
    return boxes.astype(np.float64), labels


def _place_image(src: str, dst: Path, mode: str) -> None:
    make_dirs(dst.parent)
    if mode == "copy":  # atomic: a full disk or a kill never leaves half an image under the real name
        with open(src, "rb") as fh:
            atomic_write(dst, lambda out: shutil.copyfileobj(fh, out))
        shutil.copystat(src, dst)
        return
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if mode == "symlink":
        os.symlink(os.path.abspath(src), dst)
    else:
        raise ValueError(f"images must be copy, symlink or none, got {mode!r}")


def _num(v: float) -> str:
    """Short exact-enough text for a pixel coordinate (integers stay integers)."""
    text = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def write_dataset(
    splits: dict[str, DetectionDataset], out_dir: str | os.PathLike, fmt: str, images: str = "symlink",
    progress: bool | None = None,
) -> dict[str, Any]:
    """Write ``splits`` (name -> dataset) to ``out_dir`` in ``fmt``; returns stats per split and the path of
    the written descriptor (``out_dir/dataset.yaml``). ``progress``: a bar per split (None: on a terminal)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "voc" and images == "none":
        raise ValueError("VOC needs its images under JPEGImages/: use images='copy' or 'symlink'")
    out = Path(out_dir)
    make_dirs(out)
    first = next(iter(splits.values()))
    names, cat_ids = first.class_names, first.category_ids
    for name, ds in splits.items():
        if ds.class_names != names:
            raise ValueError(f"split {name!r} has different class names than the others")
    stats: dict[str, Any] = {}
    # an absolute root: Ultralytics resolves a relative ``path`` against its own datasets folder, not the YAML's
    desc: dict[str, Any] = {"format": fmt, "path": str(out.resolve())}
    for split, ds in splits.items():
        writer = {"coco": _write_coco, "yolo": _write_yolo, "voc": _write_voc}[fmt]
        stats[split], desc[split] = writer(ds, out, split, images, progress)
    desc["names"] = list(names)
    if fmt != "coco":
        desc["category_ids"] = list(cat_ids)
    descriptor = out / "dataset.yaml"
    atomic_write(descriptor, yaml.safe_dump(desc, sort_keys=False, allow_unicode=True))
    stats["descriptor"] = str(descriptor)
    return stats


def _image_target(out: Path, sub: str, rec: ImageRecord, images: str) -> tuple[str, Path]:
    """(file name to record, where the image is) for one record."""
    name = Path(rec.path).name
    if images == "none":
        return rec.path, Path(rec.path)
    dst = out / sub / name
    _place_image(rec.path, dst, images)
    return name, dst


def _write_coco(ds: DetectionDataset, out: Path, split: str, images: str, progress: bool | None) -> tuple[dict, dict]:
    img_entries, anns = [], []
    ann_id = 1
    records = _readable_records(ds, progress, split)
    for rec in progress_bar(records, progress, f"convert {split}"):
        h, w = _size(rec)
        file_name, _ = _image_target(out, f"images/{split}", rec, images)
        img_entries.append({"id": rec.image_id, "file_name": file_name, "height": h, "width": w})
        for crowd in (False, True):
            boxes, labels = _pixel_boxes(rec, crowd)
            for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
                bw, bh = x2 - x1, y2 - y1
                anns.append(
                    {"id": ann_id, "image_id": rec.image_id, "category_id": ds.category_ids[label],
                     "bbox": [round(x1, 4), round(y1, 4), round(bw, 4), round(bh, 4)],
                     "area": round(bw * bh, 4), "iscrowd": int(crowd)}
                )  # fmt: skip
                ann_id += 1
    cats = [{"id": c, "name": n} for c, n in zip(ds.category_ids, ds.class_names)]
    ann_file = out / "annotations" / f"instances_{split}.json"
    atomic_write(ann_file, json.dumps({"images": img_entries, "annotations": anns, "categories": cats}))
    image_dir = f"images/{split}" if images != "none" else "/"
    return {"images": len(img_entries), "boxes": len(anns)}, {"images": image_dir, "annotations": f"annotations/{ann_file.name}"}


def _write_yolo(ds: DetectionDataset, out: Path, split: str, images: str, progress: bool | None) -> tuple[dict, str]:
    if images == "none":
        raise ValueError("YOLO labels live beside the images (images/ -> labels/): use images='copy' or 'symlink'")
    n_boxes = dropped = 0
    records = _readable_records(ds, progress, split)
    for rec in progress_bar(records, progress, f"convert {split}"):
        _, dst = _image_target(out, f"images/{split}", rec, images)
        label_file = out / "labels" / split / (dst.stem + ".txt")
        label_file.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        if rec.normalized:
            norm = rec.boxes.astype(np.float64)
        else:
            h, w = _size(rec)
            norm = rec.boxes.astype(np.float64) / np.array([w, h, w, h])
        for (x1, y1, x2, y2), label in zip(norm.tolist(), rec.labels.tolist()):
            lines.append(f"{label} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}")
        n_boxes += len(lines)
        dropped += len(rec.ignore_labels)
        atomic_write(label_file, "\n".join(lines) + ("\n" if lines else ""))
    return {"images": len(records), "boxes": n_boxes, "dropped_crowd_or_difficult": dropped}, f"images/{split}"


def _write_voc(ds: DetectionDataset, out: Path, split: str, images: str, progress: bool | None) -> tuple[dict, str]:
    ids = []
    n_boxes = 0
    records = _readable_records(ds, progress, split)
    for rec in progress_bar(records, progress, f"convert {split}"):
        _, dst = _image_target(out, "JPEGImages", rec, images)
        h, w = _size(rec)
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = "JPEGImages"
        ET.SubElement(root, "filename").text = dst.name
        size = ET.SubElement(root, "size")
        for tag, v in (("width", w), ("height", h), ("depth", 3)):
            ET.SubElement(size, tag).text = str(v)
        for crowd in (False, True):
            boxes, labels = _pixel_boxes(rec, crowd)
            for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
                obj = ET.SubElement(root, "object")
                ET.SubElement(obj, "name").text = ds.class_names[label]
                ET.SubElement(obj, "difficult").text = "1" if crowd else "0"
                bb = ET.SubElement(obj, "bndbox")
                # back to VOC's 1-based inclusive pixel indices (inverse of the reader)
                for tag, v in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
                    ET.SubElement(bb, tag).text = _num(v)
                n_boxes += 1
        ET.indent(root)
        xml_file = out / "Annotations" / f"{dst.stem}.xml"
        atomic_write(xml_file, lambda fh: ET.ElementTree(root).write(fh, encoding="utf-8"))
        ids.append(dst.stem)
    sets = out / "ImageSets" / "Main"
    atomic_write(sets / f"{split}.txt", "\n".join(ids) + "\n")
    return {"images": len(ids), "boxes": n_boxes}, f"ImageSets/Main/{split}.txt"
