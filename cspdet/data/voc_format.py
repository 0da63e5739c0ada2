"""Pascal VOC xml annotations -> :class:`~cspdet.data.records.ImageRecord` s (one xml per image).

VOC ``<bndbox>`` holds 1-based inclusive pixel indices; they become ``[xmin - 1, ymin - 1, xmax, ymax]`` px. Boxes
marked ``difficult`` are kept out of the training targets and stay in the ground truth, where COCOeval ignores them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from .problems import ProblemReport
from .records import ImageRecord, _check_box, _empty_boxes, _stable_image_ids, inside_folder, is_file

__all__ = ["VOC_CLASSES", "read_voc"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

# ================================================================================================= VOC


def read_voc(
    imageset_files: list[str | Path], class_names: list[str], report: ProblemReport, allow_outside: bool = False
) -> list[ImageRecord]:

    """Parse Pascal VOC splits. Each entry is an ``<root>/ImageSets/Main/<set>.txt`` file; the images are
    ``<root>/JPEGImages/<id>.<ext>`` and the labels ``<root>/Annotations/<id>.xml``. An image-set line or a
    ``<filename>`` that leads outside ``JPEGImages`` (resp. ``Annotations``) is a ``path_outside_dataset``
    problem unless ``allow_outside`` (see :func:`~cspdet.data.records.inside_folder`)."""
    label_of = {n: i for i, n in enumerate(class_names)}
    entries: list[tuple[Path, str, str]] = []  # (root, image id stem, file:line where it is listed)
    listed: dict[tuple[Path, str], str] = {}  # -> where it was first listed (file:line)
    for spec in imageset_files:
        spec = Path(spec)
        if not is_file(spec):
            report.add("malformed_file", str(spec), "VOC image-set file not found (expected <root>/ImageSets/Main/<set>.txt)")
        root = spec.parent.parent.parent
        if not (root / "JPEGImages").is_dir():  # else every image would be "not found" without naming the folder
            report.add("missing_folder", str(root / "JPEGImages"), f"images folder not found (the images of {spec.name})")
        try:
            text = spec.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            report.add("malformed_file", str(spec), f"cannot read VOC image-set file ({err})")
        for n, line in enumerate(text.splitlines(), 1):
            if line.split():
                key = (root, line.split()[0])
                if key in listed:
                    report.add("duplicate_image", f"{spec}:{n}", f"image '{key[1]}' already listed at {listed[key]}; keeping the first")
                    continue
                listed[key] = f"{spec.name}:{n}"
                entries.append((*key, f"{spec}:{n}"))
    kept: list[tuple[str, ImageRecord]] = []
    seen_paths: set[str] = set()
    for root, stem, listed_at in entries:
        xml_file = inside_folder(root / "Annotations", f"{stem}.xml", listed_at, report, allow_outside)
        if xml_file is None:
            continue
        if not is_file(xml_file):
            report.add("missing_annotation_file", str(xml_file), f"annotation file for image '{stem}' not found")
            continue
        try:
            tree = ET.parse(xml_file).getroot()
        except ET.ParseError as err:
            report.add("malformed_annotation_file", str(xml_file), f"malformed XML ({err})")
            continue
        filename = tree.findtext("filename")
        if filename and inside_folder(root / "JPEGImages", filename.strip(), str(xml_file), report,
                                      allow_outside) is None:
            continue
        image_path = _voc_image_path(root, stem, filename.strip() if filename else None)
        if image_path is None:
            report.add("missing_image", str(root / "JPEGImages" / f"{stem}.jpg"), f"image file not found (listed in {xml_file.name})")
            continue
        if str(image_path) in seen_paths:
            report.add("duplicate_image", str(image_path), "listed more than once in the image sets; keeping the first")
            continue
        seen_paths.add(str(image_path))
        w = _to_int(tree.findtext("size/width"))
        h = _to_int(tree.findtext("size/height"))
        if not (w and h and w > 0 and h > 0):
            w = h = None
        rec = ImageRecord(path=str(image_path), image_id=0, boxes=_empty_boxes()[0], labels=_empty_boxes()[1],
                          height=h, width=w)  # fmt: skip
        boxes, labels, iboxes, ilabels = [], [], [], []
        for k, obj in enumerate(tree.iter("object")):
            name = (obj.findtext("name") or "").strip()
            where = f"{xml_file} object {k} ({name or 'no name'})"
            if name not in label_of:
                report.add("unknown_category", where, f"class name {name!r} is not in the dataset's names")
                continue
            try:
                vals = [float(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")]
            except (TypeError, ValueError):
                report.add("bad_box", where, "missing or non-numeric <bndbox> xmin/ymin/xmax/ymax")
                continue
            # VOC pixel indices are 1-based and inclusive: pixels xmin..xmax span [xmin - 1, xmax].
            box = _check_box([vals[0] - 1, vals[1] - 1, vals[2], vals[3]], w, h, where, report)
            if box is None:
                continue
            difficult = (obj.findtext("difficult") or "0").strip() == "1"
            (iboxes if difficult else boxes).append(box)
            (ilabels if difficult else labels).append(label_of[name])
        rec.boxes, rec.labels = np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)
        rec.ignore_boxes, rec.ignore_labels = np.array(iboxes, np.float32).reshape(-1, 4), np.array(ilabels, np.int64)
        kept.append((str(image_path), rec))
    for rec, image_id in zip((r for _, r in kept), _stable_image_ids([p for p, _ in kept])):
        rec.image_id = image_id
    return [r for _, r in kept]


def _to_int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text is not None else None
    except (ValueError, OverflowError):  # not a number, or inf / 1e999
        return None


def _voc_image_path(root: Path, stem: str, filename: str | None) -> Path | None:
    candidates = [root / "JPEGImages" / filename] if filename else []
    candidates += [root / "JPEGImages" / f"{stem}{s}" for s in (".jpg", ".jpeg", ".png", ".JPG", ".PNG")]
    for c in candidates:
        if is_file(c):
            return c
    return None
