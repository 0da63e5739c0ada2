"""The pictures of an evaluation: PR curve, F1 / precision / recall over confidence, confusion matrix.

:func:`write_eval_plots` writes all of them next to ``metrics.json``; each ``*_figure`` function builds one
chart from plain arrays (so tests can inspect it) and each ``plot_*`` one saves it.

With many classes the charts stay readable: one thin line per class in its :func:`~.figures.rgb` colour and
the mean over classes bold, a legend of classes only up to :data:`LEGEND_MAX_CLASSES`, and confusion-matrix
tick labels only as dense as their font allows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.figure import Figure

from ..eval_curves import (
    ConfidenceCurves,
    confidence_curves,
    confusion_matrix,
    images_from_coco,
    match_detections,
)
from .figures import fit_tick_labels, new_figure, plural, rgb, save_figure

__all__ = [
    "EVAL_PLOTS",
    "LEGEND_MAX_CLASSES",
    "confidence_figure",
    "confusion_figure",
    "plot_pr_curve",
    "pr_figure",
    "write_eval_plots",
]

# Above this many classes the per-class lines get no legend entries (the colours are those of class_color).
LEGEND_MAX_CLASSES = 10
# The files write_eval_plots writes, in its order.
EVAL_PLOTS = ("pr_curve.png", "f1_curve.png", "p_curve.png", "r_curve.png", "confusion_matrix.png",
              "confusion_matrix_normalized.png")
_MEAN_COLOUR = "#1f3b73"
_CURVE_NAMES = {"f1": "F1", "precision": "Precision", "recall": "Recall"}


def _curve_axes(fig: Figure, xlabel: str, ylabel: str, title: str):
    ax = fig.add_subplot()
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)  # a curve at 0 (nothing found yet) stays visible above the bottom spine
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3, lw=0.5)
    return ax


def _legend(fig: Figure, ax, per_class: bool) -> None:
    # per-class entries go beside the axes (they would hide curves inside); the 1-2 mean lines fit inside
    if not ax.get_legend_handles_labels()[0]:  # no class with objects: nothing to name
        return
    if per_class:
        fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    else:
        ax.legend(loc="lower left", fontsize=8)


def pr_figure(recall: np.ndarray, precision: np.ndarray, names: Sequence[str],
              mean_all_iou: np.ndarray | None = None) -> Figure:
    """Precision over recall at IoU 0.50, per class and averaged.

    Args:
        recall: (R,) recall thresholds (COCOeval's 101).
        precision: (R, K) precision at IoU 0.50 per class (COCOeval ``eval["precision"][0, :, k, 0, -1]``);
            a column of NaN or -1 is a class without ground truth and is not drawn.
        names: K class names.
        mean_all_iou: (R,) the class mean averaged over IoU 0.50:0.95 too (its area is AP), drawn dashed.
    """
    precision = np.where(precision > -1, precision, np.nan)
    present = ~np.isnan(precision).all(axis=0)
    ks = np.flatnonzero(present)
    per_class = len(ks) <= LEGEND_MAX_CLASSES
    fig = new_figure(8.5 if per_class else 7, 5.5)
    title = f"Precision-recall, IoU 0.50 ({plural(len(ks), 'class')} with objects)"
    ax = _curve_axes(fig, "Recall", "Precision", title)
    thin = 1.0 if per_class else 0.6
    for k in ks:
        ap50 = float(np.nanmean(precision[:, k]))
        ax.plot(recall, precision[:, k], lw=thin, color=rgb(k), alpha=0.9,
                label=f"{names[k]} {ap50:.3f}" if per_class else None)
    if len(ks):
        mean = np.nanmean(precision[:, ks], axis=1)
        ax.plot(recall, mean, lw=2.8, color=_MEAN_COLOUR, label=f"all classes, AP50 {float(mean.mean()):.3f}")
    if mean_all_iou is not None and np.isfinite(mean_all_iou).any():
        ax.plot(recall, mean_all_iou, lw=1.8, ls="--", color="black",
                label=f"all classes, IoU .50:.95, AP {float(np.nanmean(mean_all_iou)):.3f}")
    _legend(fig, ax, per_class and len(ks) > 0)
    return fig


def confidence_figure(curves: ConfidenceCurves, which: str, names: Sequence[str]) -> Figure:
    """``which`` ("f1", "precision" or "recall") over the confidence threshold, per class and averaged, with
    the threshold of the best mean F1 marked and named in the title.

    Args:
        curves: (K, T) curves of :func:`cspdet.engine.eval_curves.confidence_curves`.
        names: K class names.
    """
    label = _CURVE_NAMES[which]
    values = getattr(curves, which)
    ks = np.flatnonzero(curves.present)
    per_class = len(ks) <= LEGEND_MAX_CLASSES
    best_index, best_conf = curves.best()
    mean = curves.mean(which)
    short = {"f1": "F1", "precision": "P", "recall": "R"}[which]
    found = curves.mean("f1")[best_index] > 0
    title = f"{label} over confidence, IoU 0.50 ({plural(len(ks), 'class')} with objects)"
    if not found:  # an untrained model: there is no best threshold to name
        title += "\nno detection matches an object"
    else:
        title += f"\nbest mean F1 {curves.mean('f1')[best_index]:.3f} at conf {best_conf:.3f}"
        if which != "f1":
            title += f", where mean {short} is {mean[best_index]:.3f}"
    fig = new_figure(8.5 if per_class else 7, 5.5)
    ax = _curve_axes(fig, "Confidence threshold", label, title)
    thin = 1.0 if per_class else 0.6
    for k in ks:
        ax.plot(curves.conf, values[k], lw=thin, color=rgb(k), alpha=0.9,
                label=f"{names[k]} ({int(curves.n_gt[k])} objects)" if per_class else None)
    if len(ks):
        ax.plot(curves.conf, mean, lw=2.8, color=_MEAN_COLOUR,
                label=f"all classes, {short} {mean[best_index]:.3f} at {best_conf:.3f}" if found else "all classes")
        if found:
            ax.axvline(best_conf, color="0.35", lw=1.0, ls=":")
    _legend(fig, ax, per_class and len(ks) > 0)
    return fig


def confusion_figure(matrix: np.ndarray, names: Sequence[str], normalize: bool, conf: float = 0.25,
                     iou: float = 0.45) -> Figure:
    """The confusion matrix as a heat map, true class across, predicted class down, background last.

    Args:
        matrix: (K + 1, K + 1) counts of :func:`cspdet.engine.eval_curves.confusion_matrix` (rows predicted).
        names: K class names.
        normalize: divide each column by its sum (the share of a true class's objects per prediction).
        conf, iou: the thresholds the matrix was counted at (for the title).

    Classes that no object and no detection has are left out (said in the title), so an 80-class dataset with
    a dozen classes in its val split shows a dozen rows.
    """
    k = len(names)
    keep = np.flatnonzero((matrix[:k].sum(axis=1) + matrix[:, :k].sum(axis=0)) > 0)
    rows = np.append(keep, k)
    shown = matrix[np.ix_(rows, rows)].astype(np.float64)
    if normalize:
        totals = shown.sum(axis=0, keepdims=True)
        shown = np.divide(shown, totals, out=np.zeros_like(shown), where=totals > 0)
    labels = [str(names[i]) for i in keep] + ["background"]
    n = len(rows)
    side = float(np.clip(0.26 * n + 1.5, 4.5, 16.0))  # inches of the matrix itself: ~19 pt per cell up to 55
    spacing = side * 72 / n  # pt per cell
    fig = new_figure(side + 3.2, side + 2.2)
    ax = fig.add_subplot()
    if normalize:
        norm = Normalize(0.0, 1.0)
    else:
        # square-root scale: one dominant class (person) would otherwise wash every other count out to white
        norm = PowerNorm(0.5, vmin=0.0, vmax=max(1.0, float(shown.max())))
    image = ax.imshow(shown, cmap="Blues", norm=norm, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class" if normalize else "count")
    fit_tick_labels(ax, "x", np.arange(n), labels, spacing)
    fit_tick_labels(ax, "y", np.arange(n), labels, spacing)
    ax.set_xlabel("True class")
    ax.set_ylabel("Predicted class")
    hidden = k - len(keep)
    title = f"Confusion matrix{', normalised per true class' if normalize else ''} (conf {conf:g}, IoU {iou:g})"
    if hidden:
        title += f"\n{plural(hidden, 'class')} without objects or detections not shown"
    ax.set_title(title, fontsize=11)
    size = min(9.0, 0.36 * spacing)
    if size >= 6.0:  # the numbers themselves, while they fit in their cells
        for (i, j), value in np.ndenumerate(shown):
            if value > 0:
                ax.text(j, i, f"{value:.2f}" if normalize else f"{int(value)}", ha="center", va="center",
                        fontsize=size if normalize or value < 1000 else 0.75 * size,
                        color="white" if norm(value) > 0.55 else "black")
    return fig


def plot_pr_curve(metrics: Any, path: str | os.PathLike) -> Path:
    """Write :func:`pr_figure` of a :class:`~cspdet.engine.coco_metrics.COCOMetrics` to ``path``: its COCOeval
    precision at IoU 0.50, area all, 100 detections per image, and the mean over IoU 0.50:0.95 dashed."""
    prec = np.where(metrics.precision > -1, metrics.precision, np.nan)[:, :, :, 0, -1]  # (T, R, K)
    t50 = int(np.argmin(np.abs(metrics.iou_thresholds - 0.5)))
    present = ~np.isnan(prec[t50]).all(axis=0)  # classes with ground truth
    mean_all_iou = np.nanmean(prec[:, :, present], axis=(0, 2)) if present.any() else None
    names = [c.name for c in metrics.per_class]
    return save_figure(pr_figure(metrics.recall_thresholds, prec[t50], names, mean_all_iou), path)


def write_eval_plots(out_dir: str | os.PathLike, metrics: Any, coco_gt: Any, detections: Sequence[dict[str, Any]],
                     conf: float = 0.25, iou: float = 0.45) -> list[Path]:
    """Write the :data:`EVAL_PLOTS` of one evaluation to ``out_dir``.

    Args:
        metrics: the :class:`~cspdet.engine.coco_metrics.COCOMetrics` of ``detections`` (its COCOeval precision
            gives the PR curve, its category order the class order).
        coco_gt: the ground truth (a pycocotools ``COCO``) the detections were scored against.
        detections: COCO results ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``.
        conf, iou: thresholds of the confusion matrix.

    Returns:
        the paths written.
    """
    out = Path(out_dir)
    names = [c.name for c in metrics.per_class]
    written = [plot_pr_curve(metrics, out / "pr_curve.png")]
    num_classes = len(metrics.category_ids)
    images = images_from_coco(coco_gt, detections, metrics.category_ids)
    curves = confidence_curves(*match_detections(images, num_classes, iou_threshold=0.5))
    for which, name in (("f1", "f1_curve.png"), ("precision", "p_curve.png"), ("recall", "r_curve.png")):
        written.append(save_figure(confidence_figure(curves, which, names), out / name))
    matrix = confusion_matrix(images, num_classes, conf=conf, iou_threshold=iou)
    for normalize, name in ((False, "confusion_matrix.png"), (True, "confusion_matrix_normalized.png")):
        written.append(save_figure(confusion_figure(matrix, names, normalize, conf, iou), out / name))
    return written
