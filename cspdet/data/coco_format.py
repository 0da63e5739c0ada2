"""COCO json annotations -> :class:`~cspdet.data.records.ImageRecord` s, and the ground-truth check of
``cspdet val --ann``.

COCO ``bbox`` ``[x, y, w, h]`` px becomes ``[x1, y1, x2, y2]`` px; category ids become contiguous labels 0..C-1 in
ascending id order (``category_ids[label]`` maps back). ``iscrowd`` boxes are kept out of the training targets
and stay in the ground truth, where COCOeval ignores them."""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .problems import PROBLEM_KINDS, DatasetError, DatasetProblem, ProblemReport
from .record_table import RecordTable
from .records import ImageRecord, _check_box, _is_int, _is_number, inside_folder, is_file, plain_file_name

__all__ = ["check_coco_ground_truth", "parse_coco", "read_coco"]

# ================================================================================================ COCO


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        # json.load(f) would hold the file's bytes, their decoded text and the parsed objects at once
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
        del raw
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not a UTF-8 JSON file ({err.reason} at byte {err.start})") from None
    except RecursionError:  # json's decoder recurses once per level: "[[[[..." would otherwise be a traceback
        raise DatasetError(f"{path}: malformed JSON: nested too deeply (more than ~{sys.getrecursionlimit()} "
                           "levels)") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the annotation file ({err.strerror or err})") from None


def read_coco(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    report: ProblemReport,
    names: list[str] | None = None,
    allow_outside: bool = False,
) -> tuple[RecordTable, list[str], list[int]]:
    """Parse a COCO instances json (validated via plain json, indexed like pycocotools does).

    Returns (records as a :class:`RecordTable`, class_names, category_ids). Problems go to ``report`` (see
    module docstring). A ``file_name`` that leads outside ``image_dir`` is a ``path_outside_dataset`` problem unless
    ``allow_outside`` (see :func:`~cspdet.data.records.inside_folder`).
    """
    ann_path, image_dir = Path(annotation_file), Path(image_dir)
    data = _load_json(ann_path)
    if not image_dir.is_dir():  # else every image would be "not found" without naming the folder
        report.add("missing_folder", str(image_dir), f"images folder not found (the images of {ann_path.name})")
    return parse_coco(data, str(ann_path), image_dir, report, names, allow_outside)


def parse_coco(
    data: Any,
    src: str,
    image_dir: Path | None,
    report: ProblemReport,
    names: list[str] | None = None,
    allow_outside: bool = False,
) -> tuple[RecordTable, list[str], list[int]]:

    """:func:`read_coco` on json already loaded from file ``src``. With ``image_dir=None`` only the json is
    checked (images need no ``file_name`` and are not looked for on disk; records have ``path=None``)."""
    if not isinstance(data, dict):
        report.add("malformed_file", src, f"expected a JSON object with images/annotations/categories, got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            report.add("malformed_file", src, f"missing or non-list '{key}' (is this a COCO instances file?)")
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        report.add("malformed_file", src, "'annotations' is not a list")

    # categories -> contiguous labels in ascending id order (the usual COCO 80-class order)
    cats: dict[int, str] = {}
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            report.add("malformed_file", f"{src} categories[{k}]", f"category needs an integer 'id', got {cat!r:.80}")
        if cat["id"] in cats:
            report.add("malformed_file", f"{src} categories[{k}]", f"duplicate category id {cat['id']}")
        cats[cat["id"]] = str(cat.get("name", cat["id"]))
    if not cats:
        report.add("malformed_file", src, "no categories")
    category_ids = sorted(cats)
    class_names = [cats[c] for c in category_ids]
    if names is not None and list(names) != class_names:
        report.add(
            "malformed_file", src,
            f"categories {class_names[:5]}... (in ascending id order) differ from the descriptor's names "
            f"{list(names)[:5]}...; fix one of them so labels mean the same in every split",
        )  # fmt: skip
    label_of = {c: i for i, c in enumerate(category_ids)}

    # images
    folder = os.fspath(image_dir) if image_dir is not None else ""
    order: list[int] = []
    info: dict[int, dict[str, Any]] = {}
    for k, img in enumerate(data["images"]):
        where = f"{src} images[{k}]"
        need_file = image_dir is not None
        if (not isinstance(img, dict) or not _is_int(img.get("id"))
                or (need_file and not isinstance(img.get("file_name"), str))):
            needs = "integer 'id' and string 'file_name'" if need_file else "an integer 'id'"
            report.add("bad_image_entry", where, f"image entry needs {needs}, got {img!r:.100}")
            continue
        where = f"{src} image id {img['id']}"
        if img["id"] in info:
            report.add("duplicate_image", where, f"duplicate image id (file {img.get('file_name')}); keeping the first entry")
            continue
        h, w = img.get("height"), img.get("width")
        if not (_is_number(h) and _is_number(w) and h > 0 and w > 0):
            h = w = None  # read from the file header later if needed
        path = None
        if need_file and plain_file_name(img["file_name"]):
            path = os.path.join(folder, img["file_name"])  # a str: 118k Path objects cost seconds
        elif need_file:
            path = inside_folder(image_dir, img["file_name"], where, report, allow_outside)
            if path is None:
                info[img["id"]] = {"skip": True}
                continue
        if path is not None and not is_file(path):
            report.add("missing_image", str(path), f"image file not found (image id {img['id']} in {Path(src).name})")
            info[img["id"]] = {"skip": True}
            continue
        info[img["id"]] = {"path": path if path is None else str(path), "h": h, "w": w}
        order.append(img["id"])

    # annotations: one vectorised pass when every field has its expected type (the usual case), else one at a time
    fast = _annotations_vectorised(anns, src, info, order, category_ids, report)
    if fast is not None:
        return fast, class_names, category_ids
    for img in info.values():
        if "skip" not in img:
            img.update(boxes=[], labels=[], ids=[], iboxes=[], ilabels=[], iids=[], anns=[])
    seen_ann: set[int] = set()
    for k, ann in enumerate(anns if isinstance(anns, list) else []):
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        if not _is_int(ann_id):
            ann_id = None  # a missing or non-integer id (e.g. a list) is named by position instead
        where = f"{src} annotation id {ann_id}" if ann_id is not None else f"{src} annotations[{k}]"
        if not isinstance(ann, dict):
            report.add("bad_box", where, f"annotation is not an object: {ann!r:.80}")
            continue
        if ann_id is not None:
            if ann_id in seen_ann:
                report.add("duplicate_annotation", where, "duplicate annotation id; keeping the first")
                continue
            seen_ann.add(ann_id)
        image_ref = ann.get("image_id")
        img = info.get(image_ref) if _is_int(image_ref) else None
        if img is None:
            report.add("unknown_image_ref", where, f"refers to image id {image_ref!r:.40} which is not in 'images'")
            continue
        if img.get("skip"):
            continue  # its image was already reported
        cat_ref = ann.get("category_id")
        if not (_is_int(cat_ref) and cat_ref in label_of):
            report.add("unknown_category", where, f"category id {cat_ref!r:.40} is not in 'categories'")
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            report.add("bad_box", where, f"bbox must be 4 numbers [x, y, w, h], got {bbox!r:.80}")
            continue
        x, y, bw, bh = (float(v) for v in bbox)
        box = _check_box([x, y, x + bw, y + bh], img["w"], img["h"], where, report)
        if box is None:
            continue
        crowd = bool(ann.get("iscrowd", 0))
        pre = "i" if crowd else ""
        img[pre + "boxes"].append(box)
        img[pre + "labels"].append(label_of[ann["category_id"]])
        ann_id = ann_id if ann_id is not None else -(k + 1)
        img[pre + "ids"].append(ann_id)
        gt = {key: v for key, v in ann.items() if key != "segmentation"}
        gt["id"] = ann_id
        if box != [x, y, x + bw, y + bh]:
            gt["bbox"] = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
        if not _is_number(gt.get("area")):
            gt["area"] = (box[2] - box[0]) * (box[3] - box[1])
        gt["iscrowd"] = int(crowd)
        img["anns"].append(gt)

    records = []
    for image_id in order:
        img = info[image_id]
        records.append(
            ImageRecord(
                path=img["path"], image_id=image_id, height=img["h"], width=img["w"],
                boxes=np.array(img["boxes"], np.float32).reshape(-1, 4),
                labels=np.array(img["labels"], np.int64),
                ignore_boxes=np.array(img["iboxes"], np.float32).reshape(-1, 4),
                ignore_labels=np.array(img["ilabels"], np.int64),
                ann_ids=img["ids"], ignore_ann_ids=img["iids"], coco_anns=img["anns"],
            )
        )  # fmt: skip
    _fix_missing_ann_ids(records)
    return RecordTable.from_records(records), class_names, category_ids


_INT = {int}
_CHUNK = 1 << 14  # annotations checked per numpy pass (bounds the temporaries)
_NUMBER = {int, float}


def _annotations_vectorised(
    anns: Any, src: str, info: dict[int, dict[str, Any]], order: list[int], category_ids: list[int],
    report: ProblemReport,
) -> RecordTable | None:
    """The records of :func:`parse_coco` from its images (``info``, ``order``) and annotations, with the
    annotations checked as columns (numpy) instead of one Python object at a
    time: the same records, the same problems in the same order, at a fraction of the time and memory (no
    per-annotation dict, list or array; what is kept of an annotation is about 80 bytes). ``_CHUNK``
    annotations at a time.

    Returns None, having reported nothing, when a field has a type the columns cannot hold (a missing or
    non-integer id, a bbox that is not 4 numbers, ...) or an id is not positive (given a fresh one): the
    one-at-a-time loop then reads the file and names each such annotation.
    """
    if not isinstance(anns, list) or not category_ids or not all(type(a) is dict for a in anns):
        return None
    n, m = len(anns), len(order)
    try:
        heights = np.array([math.nan if info[i]["h"] is None else info[i]["h"] for i in order], np.float64)
        widths = np.array([math.nan if info[i]["w"] is None else info[i]["w"] for i in order], np.float64)
    except OverflowError:
        return None
    if m and (np.abs(np.nan_to_num(np.concatenate([heights, widths]))) > 2**53).any():
        return None  # sizes a float would round: the one-at-a-time loop
    # image of each annotation: its record index, -1 unknown, -2 an image skipped (already reported)
    known = np.array(list(info), np.int64)
    status = np.array([-2 if "skip" in v else 0 for v in info.values()], np.int64)
    status[status == 0] = np.arange(m)  # info holds the kept images in ``order``
    sort = np.argsort(known, kind="stable")
    known, status = known[sort], status[sort]
    cat_sorted = np.array(category_ids, np.int64)

    ann_id, rec, label = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    cat_ok, box_ok, outside = np.empty(n, bool), np.empty(n, bool), np.empty(n, bool)
    clipped, crowd = np.empty(n, bool), np.empty(n, bool)
    box32, gt_bbox, gt_area = np.empty((n, 4), np.float32), np.empty((n, 4), np.float64), np.empty(n, np.float64)
    for s in range(0, n, _CHUNK):
        part = slice(s, min(s + _CHUNK, n))
        cols = _columns(anns[part])
        if cols is None:
            return None
        ids, refs, cats, xywh, area, area_given, crowds = cols
        if (ids <= 0).any():
            return None
        ann_id[part], crowd[part] = ids, crowds
        if len(known):
            pos = np.minimum(np.searchsorted(known, refs), len(known) - 1)
            r = np.where(known[pos] == refs, status[pos], -1)
        else:
            r = np.full(len(ids), -1, np.int64)
        rec[part] = r
        cpos = np.minimum(np.searchsorted(cat_sorted, cats), len(cat_sorted) - 1)
        label[part], cat_ok[part] = cpos, cat_sorted[cpos] == cats
        raw = xywh.copy()
        raw[:, 2:] += raw[:, :2]  # x2 = x + w, y2 = y + h, as floats (the reader's arithmetic)
        x1, y1, x2, y2 = raw.T
        with np.errstate(invalid="ignore"):
            box_ok[part] = np.isfinite(raw).all(1) & (x2 > x1) & (y2 > y1)
            w = widths[np.maximum(r, 0)] if m else np.full(len(ids), np.nan)
            h = heights[np.maximum(r, 0)] if m else np.full(len(ids), np.nan)
            sized = ~np.isnan(w) & ~np.isnan(h)
            box = raw.copy()
            for j, side in enumerate((w, h, w, h)):  # clipped to the image where its size is known
                np.copyto(box[:, j], np.minimum(np.maximum(raw[:, j], 0.0), side), where=sized)
            outside[part] = sized & ((box[:, 2] <= box[:, 0]) | (box[:, 3] <= box[:, 1]))
            tol = np.where(w > 1, 1.0, 1e-3)
            clipped[part] = sized & ((x1 < -tol) | (y1 < -tol) | (x2 > w + tol) | (y2 > h + tol))
            changed = (box != raw).any(1)
            xywh[changed, :2] = box[changed, :2]  # the json's own box, or the clipped one where it changed
            xywh[changed, 2:] = box[changed, 2:] - box[changed, :2]
            gt_bbox[part] = xywh
            gt_area[part] = np.where(area_given, area, (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))
            box32[part] = box
    cols = xywh = raw = box = area = None  # the chunk temporaries (none when there are no annotations)
    # a repeated id: every occurrence after the first (a stable sort keeps the first of equal ids first)
    by_id = np.argsort(ann_id, kind="stable")
    repeat = ann_id[by_id[1:]] == ann_id[by_id[:-1]]
    dup = np.zeros(n, bool)
    dup[by_id[1:][repeat]] = True
    del by_id, repeat
    ok = ~dup & (rec >= 0) & cat_ok & box_ok
    keep = ok & ~outside
    problem = dup | (rec == -1) | ((rec >= 0) & ~cat_ok) | ((rec >= 0) & cat_ok & ~box_ok) | (ok & (outside | clipped))
    for k in np.flatnonzero(problem).tolist():  # reported in file order, with the one-at-a-time messages
        ann = anns[k]
        where = f"{src} annotation id {ann['id']}"
        if dup[k]:
            report.add("duplicate_annotation", where, "duplicate annotation id; keeping the first")
        elif rec[k] == -1:
            report.add("unknown_image_ref", where,
                       f"refers to image id {ann['image_id']!r:.40} which is not in 'images'")
        elif not cat_ok[k]:
            report.add("unknown_category", where, f"category id {ann['category_id']!r:.40} is not in 'categories'")
        else:
            img = info[order[rec[k]]]
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            _check_box([x, y, x + bw, y + bh], img["w"], img["h"], where, report)

    # the kept annotations, image after image (file order within an image)
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(rec[idx], kind="stable")]
    train, ignore = idx[~crowd[idx]], idx[crowd[idx]]

    def offsets(rows: np.ndarray) -> np.ndarray:
        out = np.zeros(m + 1, np.int64)
        np.cumsum(np.bincount(rec[rows], minlength=m), out=out[1:])
        return out

    # gathered one array at a time, each full-length column dropped once gathered (bounds the peak)
    gt = {"gt_bbox": gt_bbox[idx]}
    del gt_bbox
    gt["gt_area"] = gt_area[idx]
    del gt_area
    gt.update(gt_ids=ann_id[idx], gt_iscrowd=crowd[idx].astype(np.int8), gt_category_ids=cat_sorted[label[idx]],
              gt_offsets=offsets(idx))  # fmt: skip
    boxes, ignore_boxes = box32[train], box32[ignore]
    del box32
    path_bytes, path_offsets = RecordTable.encode_paths([info[i]["path"] for i in order])
    return RecordTable(
        image_ids=np.array(order, np.int64), heights=heights, widths=widths, normalized=np.zeros(m, bool),
        boxes=boxes, labels=label[train], box_offsets=offsets(train), ann_ids=ann_id[train],
        ignore_boxes=ignore_boxes, ignore_labels=label[ignore], ignore_offsets=offsets(ignore),
        ignore_ann_ids=ann_id[ignore], path_bytes=path_bytes, path_offsets=path_offsets, gt=gt,
    )  # fmt: skip


def _columns(anns: list[dict[str, Any]]) -> tuple[np.ndarray, ...] | None:
    """(ids, image ids, category ids (int64), bbox (n, 4) float64, area, whether area is a number, iscrowd
    (bool)) of annotation dicts, or None when a field has another type than these columns hold."""
    n = len(anns)
    ids = [a.get("id") for a in anns]
    refs = [a.get("image_id") for a in anns]
    cats = [a.get("category_id") for a in anns]
    bboxes = [a.get("bbox") for a in anns]
    crowds = [a.get("iscrowd", 0) for a in anns]
    if not (set(map(type, ids)) <= _INT and set(map(type, refs)) <= _INT and set(map(type, cats)) <= _INT
            and set(map(type, bboxes)) <= {list} and set(map(len, bboxes)) <= {4}
            and set(map(type, crowds)) <= {int, bool}):  # fmt: skip
        return None
    flat = list(itertools.chain.from_iterable(bboxes))
    if not set(map(type, flat)) <= _NUMBER:
        return None
    areas = [a.get("area") for a in anns]
    given = np.fromiter((type(a) in _NUMBER for a in areas), bool, n)
    try:
        return (
            np.array(ids, np.int64), np.array(refs, np.int64), np.array(cats, np.int64),
            np.array(flat, np.float64).reshape(n, 4),
            np.array([a if g else 0.0 for a, g in zip(areas, given.tolist())], np.float64), given,
            np.array(crowds, bool) if n else np.zeros(0, bool),
        )  # fmt: skip
    except OverflowError:  # an integer beyond int64 / float range
        return None


def check_coco_ground_truth(data: Any, src: str, error: type[Exception] = DatasetError) -> None:
    """Validate COCO ground truth given for scoring (``cspdet val --ann``) as carefully as a training set:
    the checks and messages of :func:`read_coco` (without looking for image files), plus what pycocotools
    needs of every annotation (an integer ``id``, a finite ``area`` >= 0). Boxes that merely extend past
    their image are accepted (scored as given).

    Raises:
        error: (default :class:`DatasetError`) the first problem, naming the file, the annotation (or image)
            id and what is wrong, and how many more problems there are.
    """
    report = ProblemReport(name=src, warn=False)
    try:
        parse_coco(data, src, None, report)
    except DatasetError as err:  # a problem that makes the whole file unusable
        raise error(str(err)) from None
    problems = [p for p in report.problems if PROBLEM_KINDS[p.kind] != "fixed"]
    reported = {p.source for p in problems}
    for k, ann in enumerate(data.get("annotations") or []):
        if not isinstance(ann, dict):
            continue  # reported by parse_coco
        ann_id = ann.get("id")
        where = f"{src} annotation id {ann_id}" if _is_int(ann_id) else f"{src} annotations[{k}]"
        if where in reported:
            continue
        area = ann.get("area")
        crowd = ann.get("iscrowd", 0)
        if not _is_int(ann_id):
            problems.append(DatasetProblem("bad_box", where, "needs an integer 'id' (pycocotools indexes ground "
                                           f"truth by it), got {ann_id!r:.40}"))
        elif not (_is_number(area) and math.isfinite(area) and area >= 0):
            problems.append(DatasetProblem("bad_box", where, f"'area' must be a finite number >= 0 (COCO's size "
                                           f"ranges use it), got {area!r:.40}"))
        elif crowd not in (0, 1):  # pycocotools hands it to C as a machine integer
            problems.append(DatasetProblem("bad_box", where, f"'iscrowd' must be 0 or 1, got {crowd!r:.40}"))
    if problems:
        more = f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
        raise error(f"{problems[0]}{more}")


def _fix_missing_ann_ids(records: list[ImageRecord]) -> None:
    """Annotations without an integer id got a negative placeholder; give them fresh positive ids."""
    used = {a for r in records for a in r.ann_ids + r.ignore_ann_ids if a > 0}
    nxt = max(used, default=0) + 1
    for r in records:
        fresh: dict[int, int] = {}
        for ids in (r.ann_ids, r.ignore_ann_ids):
            for j, a in enumerate(ids):
                if a <= 0:
                    fresh[a] = ids[j] = nxt
                    nxt += 1
        for gt in r.coco_anns or []:
            if gt["id"] <= 0:
                gt["id"] = fresh[gt["id"]]
