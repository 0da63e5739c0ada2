"""YOLO txt labels -> :class:`~cspdet.data.records.ImageRecord` s (``images/<split>/x.jpg`` -> ``labels/<split>/x.txt``).

Lines ``cls cx cy w h`` (normalised) become normalised xyxy, scaled to pixels when the image is decoded, so no
image header has to be read to build the dataset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .image_io import IMAGE_SUFFIXES
from .problems import ProblemReport
from .records import ImageRecord, _check_box, _stable_image_ids, inside_folder, is_file

__all__ = ["read_yolo", "yolo_label_path"]

# ================================================================================================ YOLO


def yolo_label_path(image_path: str | os.PathLike) -> Path:
    """Ultralytics convention: the last ``images`` directory becomes ``labels``, the suffix ``.txt``."""
    parts = list(Path(image_path).parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _list_images(spec: str | Path, root: Path, report: ProblemReport, allow_outside: bool = False,
                 src: str = "the descriptor") -> list[Path]:
    """Image paths of one YOLO split entry: a directory (searched recursively) or a .txt list (whose lines must
    stay inside the dataset root unless ``allow_outside``, see :func:`~cspdet.data.records.inside_folder`)."""
    p = Path(spec)
    if not p.is_absolute():
        p = root / p
    if p.is_dir():
        return sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and is_file(q))
    if is_file(p) and p.suffix == ".txt":
        out = []
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            report.add("malformed_file", str(p), f"cannot read the image list ({err})")
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            # Ultralytics lists are relative to the dataset root (an absolute line must point inside it too)
            q = inside_folder(root, line, f"{p}:{n}", report, allow_outside)
            if q is not None:
                out.append(q)
        return out
    report.add("malformed_file", str(p), f"split path (given in {src}) is neither an image directory nor a .txt "
               "list of images")
    return []


def read_yolo(
    image_specs: list[str], root: Path, num_classes: int, report: ProblemReport, allow_outside: bool = False,
    src: str = "the descriptor",
) -> list[ImageRecord]:
    """Parse YOLO label files for the images of one split (see :func:`yolo_label_path`).

    A missing label file means a background image. All label files missing is a layout error.
    """
    paths: list[Path] = []
    for spec in image_specs:
        paths.extend(_list_images(spec, root, report, allow_outside, src))
    if not paths:
        report.add("empty_dataset", str(root), f"no images found in {image_specs}")
    found_labels = 0
    kept_paths, parsed = [], []
    for path in paths:
        if not is_file(path):
            report.add("missing_image", str(path), "image file not found")
            continue
        label_file = yolo_label_path(path)
        boxes: list[list[float]] = []
        labels: list[int] = []
        if not is_file(label_file) and os.path.lexists(label_file):
            # not a background image: whatever it labels would be trained on as background
            report.add("malformed_annotation_file", str(label_file), "label path exists but is not a readable "
                       "file (a folder?); image skipped")
            continue
        if is_file(label_file):
            found_labels += 1
            parsed_file = _parse_yolo_label_file(label_file, num_classes, report)
            if parsed_file is None:
                continue
            boxes, labels = parsed_file
        kept_paths.append(str(path))
        parsed.append((boxes, labels))
    if kept_paths and not found_labels:
        report.add(
            "empty_dataset", str(root),
            f"none of the {len(kept_paths)} images has a label file; expected e.g. "
            f"{yolo_label_path(kept_paths[0])} (YOLO layout: images/<split>/x.jpg -> labels/<split>/x.txt)",
        )  # fmt: skip
    ids = _stable_image_ids(kept_paths)
    records = []
    for path, image_id, (boxes, labels) in zip(kept_paths, ids, parsed):
        records.append(
            ImageRecord(path=path, image_id=image_id, normalized=True,
                        boxes=np.array(boxes, np.float32).reshape(-1, 4), labels=np.array(labels, np.int64))
        )  # fmt: skip
    return records


def _parse_yolo_label_file(
    label_file: Path, num_classes: int, report: ProblemReport
) -> tuple[list[list[float]], list[int]] | None:

    """(boxes as normalised xyxy, labels) of one label file; None (reported) when it cannot be read."""
    boxes: list[list[float]] = []
    labels: list[int] = []
    seen: set[tuple] = set()
    try:
        text = label_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        # not kept as a background image: its objects would be trained on as background
        report.add("malformed_annotation_file", str(label_file), f"cannot read label file ({err}); image skipped")
        return None
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label_file}:{n}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            report.add("malformed_line", where, f"not numbers: {line.strip()[:80]!r} (expected 'class cx cy w h')")
            continue
        if len(values) == 5:
            cls, cx, cy, w, h = values
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        elif len(values) >= 7 and len(values) % 2 == 1:  # segment polygon: class x1 y1 x2 y2 ...
            cls = values[0]
            xs, ys = values[1::2], values[2::2]
            box = [min(xs), min(ys), max(xs), max(ys)]
        else:
            report.add("malformed_line", where, f"{len(values)} values; expected 5 ('class cx cy w h') or a polygon")
            continue
        if not (cls.is_integer() and 0 <= cls < num_classes):
            report.add("unknown_category", where, f"class {fields[0]} is not an integer in 0..{num_classes - 1}")
            continue
        checked = _check_box(box, 1.0, 1.0, where, report)
        if checked is None:
            continue
        key = (int(cls), *np.round(checked, 6).tolist())
        if key in seen:
            report.add("duplicate_box", where, "same class and box as an earlier line; the repeat is not trained on")
            continue
        seen.add(key)
        boxes.append(checked)
        labels.append(int(cls))
    return boxes, labels
