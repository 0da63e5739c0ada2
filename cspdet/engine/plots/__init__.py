"""Charts and pictures cspdet writes (matplotlib, Agg canvas, PNG at 150 dpi, every file atomic).

An evaluation (``COCOEvaluator.evaluate(..., plots=True)``, ``tools/eval.py``) writes, next to ``metrics.json``:

    pr_curve.png                      precision over recall at IoU 0.50, per class + mean (+ mean over .50:.95)
    f1_curve.png, p_curve.png, r_curve.png
                                      F1 / precision / recall over the confidence threshold; the title names
                                      the threshold of the best mean F1
    confusion_matrix.png              counts at conf 0.25, IoU 0.45, with a background row and column
    confusion_matrix_normalized.png   the same, each true class (column) summing to 1

A training run writes, in its directory:

    labels.png                        class histogram, box centres, box sizes, boxes per image (at the start)
    train_batch0.jpg .. train_batch2.jpg
                                      the first three training batches after augmentation, boxes drawn
    results.png                       every results.csv column over the epochs (after each evaluation)
    eval/...                          the evaluation pictures above, from the final evaluation

Boxes are drawn by :func:`cspdet.data.visualize.draw_boxes` and every class has its
:func:`cspdet.data.visualize.class_color` in every picture and chart.
"""

from __future__ import annotations

from .evaluation import EVAL_PLOTS, confidence_figure, confusion_figure, plot_pr_curve, pr_figure, write_eval_plots
from .figures import DPI, save_figure
from .training import (
    LabelStats,
    TrainingPlots,
    ValImagesLogger,
    label_stats,
    labels_figure,
    plot_labels,
    plot_results,
    plot_train_batch,
    read_results,
    results_figure,
    train_batch_image,
)

__all__ = [
    "TrainingPlots",
    "ValImagesLogger",
    "DPI",
    "EVAL_PLOTS",
    "LabelStats",
    "confidence_figure",
    "confusion_figure",
    "label_stats",
    "labels_figure",
    "plot_labels",
    "plot_pr_curve",
    "plot_results",
    "plot_train_batch",
    "pr_figure",
    "read_results",
    "results_figure",
    "save_figure",
    "train_batch_image",
    "write_eval_plots",
]
