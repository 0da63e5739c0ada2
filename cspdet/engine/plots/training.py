"""The pictures of a training run: what the labels look like, what the model is fed, how training went.

- :func:`plot_labels` -> ``labels.png``: instances per class, box centres, box widths / heights, boxes per image
  of the training split, from the annotations alone (no image is decoded);
- :func:`plot_train_batch` -> ``train_batchN.jpg``: one loader batch after augmentation, boxes drawn with
  :func:`cspdet.data.visualize.draw_boxes`, tiled;
- :func:`plot_results` -> ``results.png``: every column of ``results.csv`` over the epochs.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ...data.visualize import draw_boxes, make_grid
from ...det.targets import Targets, as_targets
from ...fileio import OutputError, atomic_write
from .figures import fit_tick_labels, new_figure, plural, rgb, save_figure

__all__ = ["LabelStats", "TrainingPlots", "ValImagesLogger", "label_stats", "labels_figure", "plot_labels", "plot_results", "plot_train_batch",
           "read_results", "results_figure", "train_batch_image"]


# Charts that are not about one class use this colour (a class colour would suggest that class).
_NEUTRAL = "#1f3b73"

# ----------------------------------------------------------------------------------------------- labels


@dataclass
class LabelStats:
    """The training boxes of a dataset, sizes relative to their image.

    Attributes:
        labels: (N,) int64 class of every box.
        boxes: (M, 4) float64 ``[cx, cy, w, h]`` as fractions of the image size; M <= N (boxes of an image
            whose size is unknown and unreadable count in ``labels`` only).
        per_image: (I,) int64 boxes per image.
    """

    labels: np.ndarray
    boxes: np.ndarray
    per_image: np.ndarray


def label_stats(dataset: Any) -> LabelStats:
    """:class:`LabelStats` of a ``cspdet.data.DetectionDataset`` (its ``records``: no image is decoded, only the
    header of an image whose size the annotation format does not store)."""
    from ...data.image_io import ImageReadError, image_size

    labels, boxes, per_image = [], [], []
    for rec in dataset.records:
        b = np.asarray(rec.boxes, np.float64).reshape(-1, 4)
        labels.append(np.asarray(rec.labels, np.int64).reshape(-1))
        per_image.append(len(b))
        if not len(b):
            continue
        if not rec.normalized:
            h, w = rec.height, rec.width
            if h is None or w is None:
                try:
                    h, w = image_size(rec.path)
                except (ImageReadError, OSError):
                    continue  # the loader reports unreadable images; the class counts still hold
            b = b / np.array([w, h, w, h], np.float64)
        boxes.append(np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0],
                               b[:, 3] - b[:, 1]], axis=1).clip(0, 1))
    return LabelStats(labels=np.concatenate(labels) if labels else np.zeros(0, np.int64),
                      boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4)),
                      per_image=np.asarray(per_image, np.int64))


def labels_figure(stats: LabelStats, names: Sequence[str], title: str = "training labels") -> Figure:
    """Four panels: instances per class (bars in the class colours), box centres and box width against
    height (2-D histograms over the image, 0..1), and a histogram of boxes per image."""
    k = len(names)
    counts = np.bincount(stats.labels, minlength=k)[:k]
    width = float(np.clip(0.13 * k + 3.0, 12.0, 30.0))
    fig = new_figure(width, 8.5)
    grid = fig.add_gridspec(2, 3, height_ratios=[1.0, 1.15])
    empty = int((counts == 0).sum())
    fig.suptitle(f"{title}: {len(stats.per_image)} images, {len(stats.labels)} boxes, {plural(k, 'class')}"
                 + (f" ({empty} without boxes)" if empty else ""), fontsize=12)

    ax = fig.add_subplot(grid[0, :])
    ax.bar(np.arange(k), counts, color=[rgb(i) for i in range(k)], width=0.8)
    slots = max(k, 12)  # a dataset of 1-3 classes gets bars of a normal width, centred, not one wall of colour
    ax.set_xlim(-0.6 - (slots - k) / 2, k - 0.4 + (slots - k) / 2)
    nonzero = counts[counts > 0]
    # one dominant class (COCO's person: 250 of 900 boxes) would flatten every other bar to a line
    if len(nonzero) and nonzero.max() > 20 * np.median(nonzero):
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.7)
        ax.set_ylabel("instances (log scale)")
    else:
        ax.set_ylabel("instances")
    # the axes span roughly the figure width minus the y label margin
    fit_tick_labels(ax, "x", np.arange(k), [str(n) for n in names], (width - 1.2) * 72 / slots)
    if k <= 20:
        for i, c in enumerate(counts):
            ax.annotate(str(int(c)), (i, c), ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                        textcoords="offset points")
    ax.margins(y=0.12)

    ax = fig.add_subplot(grid[1, 0])
    _hist2d(ax, stats.boxes[:, 0], stats.boxes[:, 1], "box centre x / image width", "box centre y / image height")
    ax.invert_yaxis()  # image coordinates: y grows downwards
    ax.set_title("where the boxes are", fontsize=10)
    ax = fig.add_subplot(grid[1, 1])
    _hist2d(ax, stats.boxes[:, 2], stats.boxes[:, 3], "box width / image width", "box height / image height")
    ax.set_title("how large the boxes are", fontsize=10)
    ax = fig.add_subplot(grid[1, 2])
    top = int(stats.per_image.max()) if len(stats.per_image) else 0
    bins = np.arange(top + 2) - 0.5 if top <= 60 else 60
    ax.hist(stats.per_image, bins=bins, color=_NEUTRAL)
    ax.set_xlabel("boxes in the image")
    ax.set_ylabel("images")
    ax.set_title(f"boxes per image (mean {stats.per_image.mean() if len(stats.per_image) else 0:.1f})",
                 fontsize=10)
    return fig


def _hist2d(ax, x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    if len(x):
        # ~2 boxes per bin on average up to 50 x 50 bins: a few hundred boxes on a fine grid read as noise
        bins = int(np.clip(np.sqrt(len(x) / 2), 10, 50))
        # cmin=1: empty bins stay white; square-root colours from 0 keep a bin of 1 box visible next to 100
        ax.hist2d(x, y, bins=bins, range=[[0, 1], [0, 1]], cmap="Blues", cmin=1, norm=PowerNorm(0.5, vmin=0))


def plot_labels(dataset: Any, path: str | os.PathLike) -> Path:
    """Write :func:`labels_figure` of ``dataset`` (a ``DetectionDataset``) to ``path``."""
    return save_figure(labels_figure(label_stats(dataset), dataset.class_names,
                                     title=getattr(dataset, "name", "training labels")), path)


# ------------------------------------------------------------------------------------------ train batches


def train_batch_image(images: np.ndarray, targets: Targets, names: Sequence[str], *deprecated: Any,
                      max_images: int = 16, max_cell: int = 480) -> np.ndarray:
    """One training batch as a single RGB picture.

    Args:
        images: (B, 3, H, W) uint8 RGB, as the train loader yields them (array or tensor).
        targets: the batch's :class:`~cspdet.det.targets.Targets` (boxes in image px). The earlier form
            ``(images, packed (B, M, 5) [class, x1, y1, x2, y2], mask (B, M), names)`` still works, with a
            DeprecationWarning.
        names: class names.
        max_images: at most this many images of the batch are tiled.
        max_cell: images larger than this (px) are shrunk to it *before* drawing, so labels stay legible.

    Returns:
        (rows * cell + pad, cols * cell + pad, 3) uint8, ``ceil(sqrt(n))`` images per row.
    """
    if not isinstance(targets, Targets):  # the earlier (images, packed, mask, names[, max_images[, max_cell]])
        if not 1 <= len(deprecated) <= 3:
            raise TypeError("train_batch_image(images, targets, names): targets must be a cspdet.det.Targets")
        mask, names = torch.as_tensor(_numpy(names)), deprecated[0]
        if len(deprecated) > 1:
            max_images = deprecated[1]
        if len(deprecated) > 2:
            max_cell = deprecated[2]
        targets = as_targets(torch.as_tensor(_numpy(targets)), mask, caller="train_batch_image")
    images = _numpy(images)[:max_images]
    n = len(images)
    h, w = images.shape[2:]
    # small training sizes (64 px in tests) are enlarged so the drawn class names are readable
    cell = int(np.clip(max(h, w), 256, max_cell))
    scale = cell / max(h, w)
    tiles = []
    for image, t in zip(images, targets.per_image()[:n]):
        image = np.ascontiguousarray(image.transpose(1, 2, 0))
        if scale != 1:
            image = cv2.resize(image, (round(w * scale), round(h * scale)),
                               interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        tiles.append(draw_boxes(image, _numpy(t.boxes) * scale, _numpy(t.labels), names))
    return make_grid(tiles, cols=math.ceil(math.sqrt(n)), cell=cell)


def plot_train_batch(batch: dict[str, Any], names: Sequence[str], path: str | os.PathLike) -> Path:
    """Write :func:`train_batch_image` of a train-loader batch (``images`` and ``targets``, a
    :class:`~cspdet.det.targets.Targets`; a packed (B, M, 5) ``targets`` with its ``target_mask`` is deprecated)
    to ``path`` as JPEG (or PNG, by suffix)."""
    targets = batch["targets"]
    if not isinstance(targets, Targets):
        targets = as_targets(torch.as_tensor(_numpy(targets)), torch.as_tensor(_numpy(batch["target_mask"])),
                             caller="plot_train_batch")
    picture = train_batch_image(batch["images"], targets.to("cpu"), names)
    path = Path(path)
    ext = path.suffix.lower() or ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if ext in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(ext, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode {ext} images")
    return atomic_write(path, encoded.tobytes())


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


# ------------------------------------------------------------------------------------------- results.csv


def read_results(csv_path: str | os.PathLike) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``results.csv`` as (epochs (E,), column name -> (E,) float64 values).

    An empty cell (not evaluated that epoch) and COCOeval's -1 "no objects of this size" are NaN, so neither
    is drawn as a value.
    """
    with Path(csv_path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    epochs = np.array([float(r["epoch"]) for r in rows], np.float64)
    columns: dict[str, np.ndarray] = {}
    for key in (rows[0].keys() if rows else []):
        if key in ("epoch", "time_s") or key is None:
            continue
        values = np.array([_float(r.get(key)) for r in rows], np.float64)
        if not (key.startswith("train/") or key == "lr"):
            values[values == -1] = np.nan
        columns[key] = values
    return epochs, columns


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def results_figure(epochs: np.ndarray, columns: dict[str, np.ndarray]) -> Figure:
    """One small panel per column (losses, learning rate, AP, AP50, ...) over the epoch; columns without a
    single value are left out. Points are marked, so metrics evaluated every n-th epoch read as such."""
    # losses first (what moves every epoch), then the metrics, the learning rate last
    order = sorted(columns, key=lambda key: (0 if key.startswith("train/") else 2 if key == "lr" else 1))
    shown = [(key, columns[key]) for key in order if np.isfinite(columns[key]).any()]
    ncols = min(5, max(1, len(shown)))
    nrows = max(1, math.ceil(len(shown) / ncols))
    fig = new_figure(3.3 * ncols, 2.7 * nrows)
    fig.suptitle(f"results.csv, {len(epochs)} epochs", fontsize=12)
    for n, (key, values) in enumerate(shown):
        ax = fig.add_subplot(nrows, ncols, n + 1)
        ok = np.isfinite(values)
        colour = "#c0392b" if key.startswith("train/") else ("#7f8c8d" if key == "lr" else "#1f3b73")
        ax.plot(epochs[ok], values[ok], marker="o", ms=3 if ok.sum() <= 60 else 0, lw=1.5, color=colour)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, lw=0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if len(epochs):  # every panel spans all epochs, also a metric evaluated from epoch 5 on
            pad = max(0.5, 0.03 * (epochs[-1] - epochs[0]))
            ax.set_xlim(epochs[0] - pad, epochs[-1] + pad)
        low, high = ax.get_ylim()
        if low < 0 <= values[ok].min():
            # a quantity that cannot be negative (nothing detected yet: AP 0) sits just above the bottom spine
            ax.set_ylim(bottom=-0.03 * high)
        if key == "lr":  # 1.2e-03 on each tick: matplotlib's shared "1e-3" offset would crowd the title
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.1e}"))
    return fig


def plot_results(csv_path: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write :func:`results_figure` of a run's ``results.csv`` to ``path``."""
    return save_figure(results_figure(*read_results(csv_path)), path)


class TrainingPlots:
    """A training-run callback (:mod:`cspdet.engine.callbacks`) drawing the run's pictures on rank 0:
    ``labels.png`` when a new run starts, ``train_batch0..2.jpg`` from the first three batches of the first epoch,
    and ``results.png`` after each evaluation and when the run ends (it comes after the ``results.csv`` logger).

    A picture that cannot be drawn is reported and skipped: it must never end a run that trains fine. A file that
    cannot be written (disk full, ...) raises as every other output of the run does.
    """

    batches = 3

    def on_run_start(self, run: Any) -> None:
        if run.start_epoch == 0:
            self._draw(run, "labels", lambda: plot_labels(run.train_set, run.run_dir / "labels.png"))

    def on_batch_start(self, run: Any, epoch: int, index: int, batch: dict[str, Any]) -> None:
        if epoch == 0 and index < self.batches:
            self._draw(run, "a train batch", lambda: plot_train_batch(
                batch, run.train_set.class_names, run.run_dir / f"train_batch{index}.jpg"))

    def on_epoch_end(self, run: Any, stats: Any) -> None:
        if stats.metrics:
            self._draw(run, "results", lambda: plot_results(run.csv_path, run.run_dir / "results.png"))

    def on_run_end(self, run: Any, summary: dict[str, Any]) -> None:
        self._draw(run, "results", lambda: plot_results(run.csv_path, run.run_dir / "results.png"))

    @staticmethod
    def _draw(run: Any, what: str, draw: Callable[[], Any]) -> None:
        if not run.is_main:
            return
        try:
            draw()
        except OutputError:
            raise
        except Exception as err:  # noqa: BLE001 - a drawing bug or an odd dataset: say so and train on
            print(f"warning: could not draw {what} ({type(err).__name__}: {err})", flush=True)


class ValImagesLogger:
    """A training-run callback logging ``train.log_images`` validation images with the EMA model's detections
    (conf 0.25) to TensorBoard after each evaluation (rank 0). The picture is the letterboxed image the model
    saw, drawn with the one box drawer."""

    def on_eval_end(self, run: Any, epoch: int, metrics: dict[str, float]) -> None:
        if run.is_main:
            self.log(run)

    @staticmethod
    def log(run: Any) -> None:
        import torch

        from ...data.letterbox import Letterbox

        n = min(run.cfg.train.log_images, len(run.val_set))
        if n <= 0 or run.writer is None:
            return
        model = run.eval_model()
        model.eval()
        letterbox = Letterbox(tuple(run.cfg.eval.img_size))
        names = run.val_set.class_names
        with torch.no_grad():
            for k in range(n):
                sample = run.val_set.try_load_sample(k)  # an undecodable image: warned, counted, not logged
                if sample is None:
                    continue
                image, _ = letterbox.apply(sample.image)
                # a copy: images from the RAM cache are read-only (torch warns about those)
                x = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
                with run.autocast:
                    pred = model.predict(x[None].float().to(run.device), conf=0.25)[0]
                # boxes stay in input px: the logged picture is the letterboxed image the model saw
                drawn = draw_boxes(image, pred["boxes"].float().cpu().numpy(), pred["labels"].cpu().numpy(), names,
                                   scores=pred["scores"].float().cpu().numpy())
                run.writer.add_image(f"val_images/{k}", drawn, run.iteration, dataformats="HWC")
