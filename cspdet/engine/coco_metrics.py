"""COCO box scoring: ground truth and detections in, the 12 ``COCOeval`` stats, a per-class table and
``metrics.json`` out. No model and no torch: :mod:`cspdet.engine.evaluator` runs a detector over a
validation loader and hands its results list to :func:`coco_evaluate`; ``tools/eval.py --ann --results``
scores a results file with it directly. The pictures of an evaluation (PR, F1, P, R curves, confusion
matrix) are drawn from its results by :func:`cspdet.engine.plots.write_eval_plots`.

    detections [{"image_id", "category_id", "bbox": [x, y, w, h] original px, "score"}]
      ─► check_detections (ids known to the ground truth, well-formed entries)
      ─► COCOeval (pycocotools, or faster-coco-eval when asked for) ─► COCOMetrics (12 stats + per-class AP)

pycocotools is the reference: the numbers reported here are exactly the ones ``COCOeval.summarize()``
prints for the same results list. faster-coco-eval (C++, ~10x faster on COCO val) is used only when asked
for and importable; it produces the same 12 stats, and a test checks that whenever it is installed.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.coco_format import check_coco_ground_truth
from ..fileio import atomic_write

__all__ = [
    "STAT_KEYS",
    "BACKENDS",
    "ClassAP",
    "COCOMetrics",
    "EvaluationError",
    "check_detections",
    "coco_evaluate",
    "faster_coco_eval_available",
    "load_coco_gt",
    "load_detections",
]

logger = logging.getLogger(__name__)

# The 12 numbers of COCOeval.summarize() for boxes, in its order.
STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("pycocotools", "faster_coco_eval")


class EvaluationError(ValueError):
    """Ground truth and detections that cannot be scored together; ``str(err)`` is one line saying why."""


# ------------------------------------------------------------------------------------------- loading


def load_coco_gt(path: str | os.PathLike) -> COCO:
    """Read a COCO ground-truth json (quietly) and check it has what box evaluation needs.

    Raises:
        EvaluationError: missing file, invalid json, no ``images`` / ``annotations`` / ``categories``, or an
            entry the dataset readers would refuse (non-object, NaN / negative box, unknown image or category
            id, ...; see ``cspdet.data.coco_format.check_coco_ground_truth``).
    """
    data = _read_json(path, "ground truth")
    if not isinstance(data, dict):
        raise EvaluationError(f"{path}: COCO ground truth must be a json object, got a {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise EvaluationError(f"{path}: COCO ground truth has no '{key}' list")
    check_coco_ground_truth(data, str(path), error=EvaluationError)
    for ann in data["annotations"]:  # optional in COCO files (the readers take 0), but pycocotools indexes it
        ann.setdefault("iscrowd", 0)
    gt = COCO()
    gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        gt.createIndex()
    return gt


def load_detections(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a COCO results json: a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.

    Raises:
        EvaluationError: missing file, invalid json, or not a list.
    """
    data = _read_json(path, "detections")
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        raise EvaluationError(
            f"{path}: looks like a COCO ground-truth file (has 'annotations'); detections must be a json list "
            "of {image_id, category_id, bbox, score}"
        )
    if not isinstance(data, list):
        raise EvaluationError(
            f"{path}: detections must be a json list of {{image_id, category_id, bbox, score}}, "
            f"got a {type(data).__name__}"
        )
    return data


def _read_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: {what} file not found")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EvaluationError(f"{path}: not valid json ({' '.join(str(err).split())[:200]})") from None
    except RecursionError:  # json's decoder recurses once per level of "[[[[..."
        raise EvaluationError(f"{path}: not valid json (nested too deeply)") from None
    except OSError as err:
        raise EvaluationError(f"{path}: cannot read the {what} file ({err.strerror or err})") from None


def _id_list(ids: Iterable[Any], n: int = 8) -> str:
    # numbers first, by value (ints and floats mixed), then anything else by its repr: never compared across kinds
    ids = sorted(ids, key=lambda v: (0, float(v), "") if _is_number(v) else (1, 0.0, repr(v)))
    more = f" and {len(ids) - n} more" if len(ids) > n else ""
    return ", ".join(repr(i) if not isinstance(i, int) else str(i) for i in ids[:n]) + more


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_detections(
    coco_gt: COCO, detections: Sequence[dict[str, Any]], gt_name: str = "ground truth",
    det_name: str = "detections", check_entries: bool = True,
) -> None:
    """Check that every detection is well formed and refers to an image and a category of ``coco_gt``.

    pycocotools only asserts "Results do not correspond to current coco set" for unknown images and silently
    ignores unknown categories; this names the offending ids instead. ``check_entries=False`` skips the
    per-entry format checks (for detections cspdet wrote itself) and keeps the id checks.

    Raises:
        EvaluationError: the first malformed entry, or the image / category ids that ``coco_gt`` lacks.
    """
    for i, det in enumerate(detections if check_entries else ()):
        if not isinstance(det, dict):
            raise EvaluationError(f"{det_name}: entry #{i} is a {type(det).__name__}, expected an object")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in det]
        if missing:
            raise EvaluationError(f"{det_name}: entry #{i} lacks {', '.join(missing)}")
        for key in ("image_id", "category_id"):  # ids index dicts and sets below: a list or an object cannot
            ref = det[key]
            if not (_is_number(ref) and math.isfinite(ref) and float(ref).is_integer()):
                raise EvaluationError(f"{det_name}: entry #{i} has {key} {ref!r:.60}; expected an integer id")
        box = det["bbox"]
        if (not isinstance(box, (list, tuple)) or len(box) != 4
                or not all(_is_number(v) and math.isfinite(v) for v in box)):
            raise EvaluationError(f"{det_name}: entry #{i} has bbox {box!r:.80}; expected 4 finite numbers "
                                  "[x, y, w, h]")
        if box[2] < 0 or box[3] < 0:
            raise EvaluationError(f"{det_name}: entry #{i} has bbox {box!r} with a negative width or height "
                                  "(COCO boxes are [x, y, w, h], not [x1, y1, x2, y2])")
        score = det["score"]
        if not _is_number(score) or not math.isfinite(score):
            raise EvaluationError(f"{det_name}: entry #{i} has score {score!r:.60}; expected a finite number")
    gt_images = set(coco_gt.getImgIds())
    gt_cats = set(coco_gt.getCatIds())
    bad_images = {d["image_id"] for d in detections} - gt_images
    if bad_images:
        n = sum(d["image_id"] in bad_images for d in detections)
        raise EvaluationError(
            f"{det_name}: {n} detections refer to {len(bad_images)} image ids that are not in {gt_name}: "
            f"{_id_list(bad_images)} ({gt_name} has {len(gt_images)} images, ids {_id_list(gt_images, 4)})"
        )
    bad_cats = {d["category_id"] for d in detections} - gt_cats
    if bad_cats:
        n = sum(d["category_id"] in bad_cats for d in detections)
        raise EvaluationError(
            f"{det_name}: {n} detections have category ids that are not in {gt_name}: {_id_list(bad_cats)} "
            f"({gt_name} category ids: {_id_list(gt_cats, 12)})"
        )


# ------------------------------------------------------------------------------------------ scoring


@dataclass
class ClassAP:
    """One row of the per-class table. ``ap`` / ``ap50`` are NaN for a category without ground truth."""

    category_id: int
    name: str
    num_gt: int
    num_det: int
    ap: float
    ap50: float


@dataclass
class COCOMetrics:
    """Result of one COCO box evaluation.

    ``stats`` holds the 12 numbers of ``COCOeval.summarize()`` under :data:`STAT_KEYS` (-1 where pycocotools
    reports -1: no ground truth in that area range). ``precision`` is ``COCOeval.eval["precision"]``,
    shape (T=10 IoU thresholds, R=101 recall thresholds, K categories, A=4 area ranges, M=3 max dets), -1 where
    undefined; its K axis follows ``category_ids``.
    """

    stats: dict[str, float]
    per_class: list[ClassAP]
    precision: np.ndarray
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    category_ids: list[int]
    summary: str
    backend: str
    num_images: int
    num_detections: int
    eval_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ap(self) -> float:
        """mAP@[.5:.95], the headline number."""
        return self.stats["AP"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict: the 12 stats at top level, then ``per_class`` (NaN -> null) and ``meta``."""
        out: dict[str, Any] = {k: float(self.stats[k]) for k in STAT_KEYS}
        out["per_class"] = [
            {"category_id": c.category_id, "name": c.name, "num_gt": c.num_gt, "num_det": c.num_det,
             "AP": None if math.isnan(c.ap) else c.ap, "AP50": None if math.isnan(c.ap50) else c.ap50}
            for c in self.per_class
        ]
        out["meta"] = {"backend": self.backend, "num_images": self.num_images,
                       "num_detections": self.num_detections, "eval_seconds": round(self.eval_seconds, 3),
                       **self.extra}
        return out

    def save_json(self, path: str | os.PathLike) -> Path:
        return atomic_write(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def format_table(self, include_empty: bool = False) -> str:
        """Per-class table (one line per category): id, name, #GT, #det, AP, AP50 in percent.

        Categories without ground truth are left out unless ``include_empty`` (their AP is undefined).
        """
        rows = [c for c in self.per_class if include_empty or c.num_gt > 0]
        width = max([len("class")] + [len(c.name) for c in rows])
        lines = [f"{'id':>4}  {'class':<{width}}  {'gt':>6}  {'dets':>7}  {'AP':>6}  {'AP50':>6}"]
        for c in rows:
            ap = "    -" if math.isnan(c.ap) else f"{100 * c.ap:6.2f}"
            ap50 = "    -" if math.isnan(c.ap50) else f"{100 * c.ap50:6.2f}"
            lines.append(f"{c.category_id:>4}  {c.name:<{width}}  {c.num_gt:>6}  {c.num_det:>7}  {ap:>6}  {ap50:>6}")
        skipped = len(self.per_class) - len(rows)
        if skipped:
            lines.append(f"({skipped} categories without ground truth not shown)")
        return "\n".join(lines)


@contextlib.contextmanager
def _quiet_nan_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        yield


def faster_coco_eval_available() -> bool:
    """True when the optional faster-coco-eval package can be imported."""
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def _results_coco(coco_gt: COCO, detections: list[dict[str, Any]]) -> COCO:
    """pycocotools ``loadRes`` (quietly); an empty list gets an empty results set (loadRes cannot)."""
    if detections:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(detections)
    res = COCO()
    res.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                   "categories": copy.deepcopy(coco_gt.dataset["categories"])}
    with contextlib.redirect_stdout(io.StringIO()):
        res.createIndex()
    return res


def _run_pycocotools(coco_gt: COCO, detections: list[dict[str, Any]]) -> tuple[COCOeval, str]:
    coco_dt = _results_coco(coco_gt, detections)
    evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        evaluator.summarize()
    return evaluator, out.getvalue()


def _run_faster(coco_gt: COCO, detections: list[dict[str, Any]]) -> tuple[Any, str]:
    from faster_coco_eval import COCO as FastCOCO
    from faster_coco_eval import COCOeval_faster

    quiet = lambda *args, **kwargs: None  # noqa: E731 - its progress lines go to a callable
    # it adds keys ("ignore") to the GT annotation dicts: give it copies, keep the caller's COCO untouched
    dataset = dict(coco_gt.dataset, annotations=[dict(a) for a in coco_gt.dataset["annotations"]])
    gt = FastCOCO(dataset, print_function=quiet)
    dt = gt.loadRes(detections)
    evaluator = COCOeval_faster(gt, dt, iouType="bbox", print_function=quiet)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()  # its lines go to print_function (and it adds AR50 / AR75): print the standard 12
    return evaluator, _summary_lines(np.asarray(evaluator.stats)[:12])


# (precision or recall, IoU label, area, max dets) of the 12 COCOeval.summarize() lines, in STAT_KEYS order
_SUMMARY_ROWS = (
    ("AP", "0.50:0.95", "all", 100), ("AP", "0.50", "all", 100), ("AP", "0.75", "all", 100),
    ("AP", "0.50:0.95", "small", 100), ("AP", "0.50:0.95", "medium", 100), ("AP", "0.50:0.95", "large", 100),
    ("AR", "0.50:0.95", "all", 1), ("AR", "0.50:0.95", "all", 10), ("AR", "0.50:0.95", "all", 100),
    ("AR", "0.50:0.95", "small", 100), ("AR", "0.50:0.95", "medium", 100), ("AR", "0.50:0.95", "large", 100),
)


def _summary_lines(stats: Sequence[float]) -> str:
    """The 12 stats laid out exactly as pycocotools' ``COCOeval.summarize()`` prints them."""
    lines = []
    for (kind, iou, area, max_dets), value in zip(_SUMMARY_ROWS, stats):
        title = "Average Precision" if kind == "AP" else "Average Recall"
        lines.append(f" {title:<18} ({kind}) @[ IoU={iou:<9} | area={area:>6} | maxDets={max_dets:>3} ] = {value:0.3f}")
    return "\n".join(lines) + "\n"


def coco_evaluate(
    coco_gt: COCO,
    detections: Sequence[dict[str, Any]],
    backend: str = "pycocotools",
    class_names: Sequence[str] | None = None,
    gt_name: str = "ground truth",
    det_name: str = "detections",
    check_entries: bool = True,
) -> COCOMetrics:
    """Score COCO-format box detections against ``coco_gt``.

    Args:
        coco_gt: ground truth with the original image and category ids.
        detections: ``[{"image_id", "category_id", "bbox": [x, y, w, h] px, "score"}, ...]``; not modified.
        backend: "pycocotools" (reference) or "faster_coco_eval" (falls back to pycocotools with a warning
            when it is not installed).
        class_names: names in ``coco_gt`` category-id order (default: the names stored in ``coco_gt``).
        gt_name, det_name: how error messages name the two inputs (e.g. their file names).
        check_entries: check the format of every entry (off for detections cspdet produced itself).

    Returns:
        :class:`COCOMetrics`; its 12 ``stats`` equal ``COCOeval.stats`` for the same inputs.

    Raises:
        EvaluationError: malformed detections, or image / category ids unknown to ``coco_gt``.
    """
    if backend not in BACKENDS:
        raise EvaluationError(f"unknown evaluation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not coco_gt.getImgIds():
        raise EvaluationError(f"{gt_name}: has no images to evaluate on")
    check_detections(coco_gt, detections, gt_name=gt_name, det_name=det_name, check_entries=check_entries)
    # loadRes adds keys (area, id, segmentation) to the dicts it gets: give it copies
    dets = [dict(d, bbox=list(d["bbox"])) for d in detections]
    if backend == "faster_coco_eval" and not faster_coco_eval_available():
        logger.warning("faster-coco-eval is not installed; using pycocotools (pip install faster-coco-eval)")
        backend = "pycocotools"
    tic = time.perf_counter()
    if backend == "faster_coco_eval":
        evaluator, summary = _run_faster(coco_gt, dets)
    else:
        evaluator, summary = _run_pycocotools(coco_gt, dets)
    seconds = time.perf_counter() - tic

    stats = {k: float(v) for k, v in zip(STAT_KEYS, np.asarray(evaluator.stats)[:12])}
    precision = np.asarray(evaluator.eval["precision"], dtype=np.float64)
    cat_ids = [int(c) for c in evaluator.params.catIds]
    if class_names is not None and len(class_names) != len(cat_ids):
        raise EvaluationError(f"{gt_name}: has {len(cat_ids)} categories but {len(class_names)} class names were given")
    names = list(class_names) if class_names is not None else [coco_gt.cats[c].get("name", str(c)) for c in cat_ids]
    num_det: dict[int, int] = {}
    for d in detections:
        num_det[d["category_id"]] = num_det.get(d["category_id"], 0) + 1
    per_class = []
    for k, cat in enumerate(cat_ids):
        # AP of one class = mean precision over IoU and recall thresholds (area all, 100 dets), as summarize()
        p = precision[:, :, k, 0, -1]
        num_gt = len(coco_gt.getAnnIds(catIds=[cat], iscrowd=False))
        with _quiet_nan_warnings():
            ap = float(np.mean(p[p > -1])) if (p > -1).any() else math.nan
            p50 = p[0]
            ap50 = float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else math.nan
        per_class.append(ClassAP(cat, str(names[k]), num_gt, num_det.get(cat, 0), ap, ap50))
    return COCOMetrics(
        stats=stats, per_class=per_class, precision=precision,
        iou_thresholds=np.asarray(evaluator.params.iouThrs, dtype=np.float64),
        recall_thresholds=np.asarray(evaluator.params.recThrs, dtype=np.float64),
        category_ids=cat_ids, summary=summary.rstrip("\n"), backend=backend,
        num_images=len(coco_gt.getImgIds()), num_detections=len(detections), eval_seconds=seconds,
    )
