"""cspdet.engine.eval_curves and cspdet.engine.plots: the numbers behind the pictures checked by hand, every
picture written as a valid image, nothing clipped at 80 (or 300) classes, and a training run's pictures."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.text import Text
from PIL import Image

from cspdet.data.coco_classes import COCO_CLASSES
from cspdet.data.visualize import class_color
from cspdet.det import Targets
from cspdet.engine.eval_curves import (
    ImageBoxes,
    box_iou,
    confidence_curves,
    confusion_matrix,
    match_detections,
)
from cspdet.engine.plots import (
    DPI,
    EVAL_PLOTS,
    LabelStats,
    confidence_figure,
    confusion_figure,
    label_stats,
    labels_figure,
    plot_results,
    plot_train_batch,
    pr_figure,
    read_results,
    results_figure,
    train_batch_image,
)


def _image(gt=(), gt_labels=(), crowd=(), crowd_labels=(), dets=()) -> ImageBoxes:
    """dets: (box, label, score) triples, sorted here by score as images_from_coco sorts them."""
    dets = sorted(dets, key=lambda d: -d[2])
    return ImageBoxes(
        gt_boxes=np.array(gt, np.float64).reshape(-1, 4), gt_labels=np.array(gt_labels, np.int64),
        crowd_boxes=np.array(crowd, np.float64).reshape(-1, 4), crowd_labels=np.array(crowd_labels, np.int64),
        det_boxes=np.array([d[0] for d in dets], np.float64).reshape(-1, 4),
        det_labels=np.array([d[1] for d in dets], np.int64), det_scores=np.array([d[2] for d in dets], np.float64),
    )


A, B, C, D = [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]
# class 0: 3 objects, detections .9 hit, .8 duplicate, .7 hit, .3 miss; class 1: 1 object, .55 hit, plus a
# detection inside a crowd region (ignored); class 2: no objects, one detection (.4)
HAND = [
    _image(gt=[A, B, C], gt_labels=[0, 0, 1],
           dets=[(A, 0, 0.9), ([1, 0, 11, 10], 0, 0.8), (B, 0, 0.7), (C, 1, 0.55), (D, 0, 0.3), (D, 2, 0.4)]),
    _image(gt=[A], gt_labels=[0], crowd=[[100, 100, 200, 200]], crowd_labels=[1],
           dets=[([110, 110, 150, 150], 1, 0.5)]),
]


def test_box_iou():
    iou = box_iou(np.array([A, [5, 0, 15, 10]]), np.array([A, B, [0, 0, 0, 0]]))
    np.testing.assert_allclose(iou, [[1, 0, 0], [50 / 150, 0, 0]])
    assert box_iou(np.zeros((0, 4)), np.array([A])).shape == (0, 1)


def test_matching_marks_duplicates_and_drops_crowd_detections():
    scores, labels, tp, n_gt = match_detections(HAND, num_classes=3)
    assert n_gt.tolist() == [3, 1, 0]
    kept = sorted(zip(labels.tolist(), scores.tolist(), tp.tolist()))
    assert kept == [(0, 0.3, False), (0, 0.7, True), (0, 0.8, False), (0, 0.9, True), (1, 0.55, True),
                    (2, 0.4, False)]  # the .5 detection inside the crowd region is gone


def test_greedy_by_score_takes_the_best_free_object():
    # the .9 detection overlaps both objects (IoU .54 and .82), the .8 one only the second (.82): COCOeval gives
    # the .9 its best (the second) and leaves the .8 without a match
    image = _image(gt=[[0, 0, 10, 10], [4, 0, 14, 10]], gt_labels=[0, 0],
                   dets=[([3, 0, 13, 10], 0, 0.9), ([5, 0, 15, 10], 0, 0.8)])
    assert match_detections([image], 1)[2].tolist() == [True, False]


def test_precision_recall_f1_by_hand():
    curves = confidence_curves(*match_detections(HAND, num_classes=3))
    at = {t: int(np.argmin(np.abs(curves.conf - t))) for t in (0.85, 0.75, 0.65, 0.5, 0.2, 0.95)}
    p, r, f1 = curves.precision, curves.recall, curves.f1
    # class 0 (3 objects) keeps: >.85: 1 hit; >.75: hit + duplicate; >.65: 2 hits of 3; >.2: 2 hits of 4
    assert (p[0, at[0.85]], r[0, at[0.85]], f1[0, at[0.85]]) == pytest.approx((1, 1 / 3, 0.5))
    assert (p[0, at[0.75]], r[0, at[0.75]], f1[0, at[0.75]]) == pytest.approx((0.5, 1 / 3, 0.4))
    assert (p[0, at[0.65]], r[0, at[0.65]], f1[0, at[0.65]]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert (p[0, at[0.2]], r[0, at[0.2]], f1[0, at[0.2]]) == pytest.approx((0.5, 2 / 3, 4 / 7))
    # above the top score precision stays at the top detection's (1), recall is 0
    assert (p[0, at[0.95]], r[0, at[0.95]], f1[0, at[0.95]]) == (1, 0, 0)
    # class 1: its one detection (.55) finds its one object
    assert (p[1, at[0.5]], r[1, at[0.5]], r[1, at[0.65]]) == (1, 1, 0)
    # class 2 has no objects: left out of the means
    assert curves.present.tolist() == [True, True, False]
    assert curves.mean("f1")[at[0.5]] == pytest.approx((2 / 3 + 1) / 2)
    assert curves.mean("f1")[at[0.2]] == pytest.approx((4 / 7 + 1) / 2)
    index, best = curves.best()  # (2/3 + 1) / 2 holds from .3 up to .55: the highest threshold is named
    assert best == pytest.approx(0.55) and curves.mean("f1")[index] == pytest.approx(5 / 6)


def test_confusion_matrix_by_hand():
    image = _image(
        gt=[A, B, C], gt_labels=[0, 1, 1], crowd=[[100, 100, 200, 200]], crowd_labels=[0],
        dets=[(A, 0, 0.9),                      # right: [0, 0]
              ([0, 0, 10, 8], 0, 0.8),          # duplicate of the same object: false detection [0, bg]
              (B, 0, 0.7),                      # object of class 1 called class 0: [0, 1]
              (D, 1, 0.6),                      # nothing there: [1, bg]
              (C, 1, 0.1),                      # below conf 0.25: the class-1 object at C is missed: [bg, 1]
              ([110, 110, 150, 150], 1, 0.9)],  # inside a crowd region (of another class): not counted
    )
    matrix = confusion_matrix([image, _image(gt=[D], gt_labels=[0])], num_classes=2)
    assert matrix.tolist() == [[1, 1, 1],
                               [0, 0, 1],
                               [1, 1, 0]]  # + the second image's missed class-0 object
    assert confusion_matrix([image], num_classes=2, conf=0.05)[1, 1] == 1  # at a lower conf C is found


# -------------------------------------------------------------------------------------------- pictures


def _png(path: Path, min_width: int = 600) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert round(im.info["dpi"][0]) == DPI
        assert im.width >= min_width and im.height >= 400, im.size
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.std() > 5  # something was drawn
    return im.size


def test_evaluator_writes_every_eval_picture(coco128_subset, tiny, tmp_path):
    from cspdet.data import build_dataset, build_val_loader
    from cspdet.engine.evaluator import COCOEvaluator

    loader = build_val_loader(build_dataset(coco128_subset, "val"), (128, 128), 6, workers=0)
    evaluator = COCOEvaluator(loader, max_det=30)
    evaluator.evaluate(tiny.detector(tiny.config(num_classes=80)), output_dir=tmp_path)
    for name in EVAL_PLOTS:
        _png(tmp_path / name)
    assert not list(tmp_path.glob(".*.tmp"))
    # --no-plots / plots=False: scores, no pictures
    evaluator.evaluate(tiny.detector(tiny.config(num_classes=80)), output_dir=tmp_path / "quiet", plots=False)
    assert sorted(p.name for p in (tmp_path / "quiet").iterdir()) == ["detections.json", "metrics.json"]


def _overflowing_text(fig) -> list[str]:
    """Texts drawn (partly) outside the figure (tick labels of ticks outside the axes' range are not drawn)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            hidden.update(id(tick.label1) for tick in axis.get_major_ticks() if not low <= tick.get_loc() <= high)
    out = []
    for text in texts:
        if id(text) in hidden:  # a label of a tick outside the axes' range: not drawn
            continue
        ext = text.get_window_extent(renderer)
        box = fig.bbox
        if ext.x0 < box.x0 - 1 or ext.y0 < box.y0 - 1 or ext.x1 > box.x1 + 1 or ext.y1 > box.y1 + 1:
            out.append(text.get_text())
    # and everything drawn together (lines, legend frames, colour bars too) lies within the figure
    tight = fig.get_tightbbox(renderer)
    width, height = fig.get_size_inches()
    if tight.x0 < -0.01 or tight.y0 < -0.01 or tight.x1 > width + 0.01 or tight.y1 > height + 0.01:
        out.append(f"content at {tight.bounds} beyond the {width} x {height} in figure")
    return out


def _overlapping_ticks(fig, ax, axis: str) -> int:
    renderer = fig.canvas.get_renderer()
    labels = [t for t in (ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()) if t.get_text()]
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0 if axis == "x" else b.y0)
    if axis == "x":
        return sum(a.x1 > b.x0 + 0.5 for a, b in itertools.pairwise(boxes))
    return sum(a.y1 > b.y0 + 0.5 for a, b in itertools.pairwise(boxes))


def _random_curves(k: int, rng: np.random.Generator):
    scores = rng.random(40 * k)
    labels = rng.integers(0, k, 40 * k)
    tp = rng.random(40 * k) < scores
    return confidence_curves(scores, labels, tp, np.full(k, 30))


@pytest.mark.parametrize("k", [1, 3, 80])
def test_curves_keep_every_text_inside_the_figure(k):
    rng = np.random.default_rng(k)
    names = list(COCO_CLASSES[:k]) if k > 3 else ["raccoon"] if k == 1 else ["circle", "square", "triangle"]
    recall = np.linspace(0, 1, 101)
    precision = np.sort(rng.random((101, k)), axis=0)[::-1]
    precision[:, -1] = -1 if k > 1 else precision[:, -1]  # a class without objects is not drawn
    figures = [pr_figure(recall, precision, names, precision.clip(0).mean(axis=1))]
    figures += [confidence_figure(_random_curves(k, rng), which, names) for which in ("f1", "precision", "recall")]
    for fig in figures:
        assert _overflowing_text(fig) == []
        legend_texts = [t.get_text() for legend in fig.legends + [a.get_legend() for a in fig.axes if a.get_legend()]
                        for t in legend.get_texts()]
        # class names in the legend up to 10 classes; above, only the mean
        assert any(names[0] in t for t in legend_texts) == (k <= 10)
        assert any(t.startswith("all classes") for t in legend_texts)


@pytest.mark.parametrize("k", [2, 80, 300])
def test_confusion_matrix_labels_fit_at_any_class_count(k):
    rng = np.random.default_rng(k)
    names = list(COCO_CLASSES[:k]) if k <= 80 else [f"class {i}" for i in range(k)]
    matrix = rng.integers(0, 5, (k + 1, k + 1)) * (rng.random((k + 1, k + 1)) < 0.2)
    matrix[np.arange(k), np.arange(k)] = rng.integers(1, 50, k)  # every class has objects: none is hidden
    for normalize in (False, True):
        fig = confusion_figure(matrix, names, normalize)
        assert _overflowing_text(fig) == []
        ax = fig.axes[0]
        assert _overlapping_ticks(fig, ax, "x") == 0 and _overlapping_ticks(fig, ax, "y") == 0
        shown = [t.get_text() for t in ax.get_yticklabels()]
        if k <= 80:
            assert shown == names + ["background"]  # 80 classes: every name, legibly
            assert min(t.get_fontsize() for t in ax.get_yticklabels()) >= 6
        else:
            assert 0 < len(shown) < k and shown[:2] == [names[0], names[2]]  # every 2nd at 300 classes


def test_confusion_matrix_grows_with_the_class_count():
    sizes = [confusion_figure(np.eye(n + 1, dtype=np.int64), list(COCO_CLASSES[:n]), False).get_size_inches()
             for n in (5, 40, 80)]
    assert sizes[0][0] < sizes[1][0] < sizes[2][0] <= 20


def test_confusion_matrix_hides_classes_without_objects_or_detections():
    matrix = np.zeros((81, 81), np.int64)
    matrix[0, 0], matrix[80, 5], matrix[7, 80] = 10, 2, 1
    fig = confusion_figure(matrix, list(COCO_CLASSES), normalize=True)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["person", "bus", "truck", "background"]
    assert "77 classes without objects or detections not shown" in ax.get_title()
    image = ax.get_images()[0].get_array()
    np.testing.assert_allclose(image.sum(axis=0), [1, 1, 0, 1])  # columns (true classes) sum to 1
    assert _overflowing_text(fig) == []


def test_labels_figure_at_80_classes_and_label_stats(coco128_root, tmp_path):
    from cspdet.data import build_dataset

    desc = tmp_path / "coco128.yaml"
    desc.write_text(f"format: coco\npath: {coco128_root}\n"
                    "train: {images: images/train, annotations: annotations/instances_train.json}\n")
    dataset = build_dataset(desc, "train")
    stats = label_stats(dataset)
    data = json.loads((coco128_root / "annotations" / "instances_train.json").read_text())
    trained = [a for a in data["annotations"] if not a.get("iscrowd")]
    assert len(stats.labels) == len(stats.boxes) == sum(len(r.boxes) for r in dataset.records)
    assert len(stats.labels) >= 0.95 * len(trained)  # the readers drop only degenerate boxes
    assert len(stats.per_image) == len(dataset) and stats.per_image.sum() == len(stats.labels)
    assert (stats.boxes >= 0).all() and (stats.boxes <= 1).all()
    fig = labels_figure(stats, dataset.class_names)
    assert _overflowing_text(fig) == []
    bars = fig.axes[0]
    assert [t.get_text() for t in bars.get_xticklabels()] == list(dataset.class_names)  # all 80 names
    assert _overlapping_ticks(fig, bars, "x") == 0
    assert bars.get_yscale() == "log"  # person outnumbers the median class > 20x


def test_labels_figure_of_a_normalised_yolo_style_dataset_without_sizes():
    # YOLO-format records hold fractions of the image size and no size: nothing needs to be read
    stats = LabelStats(labels=np.array([0, 0, 1]), boxes=np.array([[0.5, 0.5, 0.2, 0.3]] * 3),
                       per_image=np.array([2, 1, 0]))
    fig = labels_figure(stats, ["raccoon", "dog"])
    assert _overflowing_text(fig) == []
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["raccoon", "dog"]
    assert fig.axes[0].get_xticklabels()[0].get_rotation() == 0  # short names fit across


def test_train_batch_is_drawn_with_the_one_box_drawer(tmp_path):
    import torch

    images = torch.full((5, 3, 64, 96), 114, dtype=torch.uint8)
    targets = torch.zeros((5, 2, 5))
    targets[0, 0] = torch.tensor([2, 10, 10, 50, 40])
    targets[3, 0] = torch.tensor([0, 40, 20, 90, 60])
    targets[3, 1] = torch.tensor([1, 0, 0, 5, 5])
    mask = torch.zeros((5, 2), dtype=torch.bool)
    mask[0, 0] = mask[3, 0] = True  # the [3, 1] row is padding: not drawn
    names = ["circle", "square", "triangle"]
    batch_targets = Targets.from_packed(targets, mask)
    picture = train_batch_image(images.numpy(), batch_targets, names)
    # 5 images, 3 per row, each enlarged to a 256 px cell so the class names are legible
    assert picture.shape[0] > 2 * 256 and picture.shape[1] > 3 * 256
    for label, drawn in ((2, True), (0, True), (1, False)):
        hits = int((picture == np.array(class_color(label), np.uint8)).all(axis=2).sum())
        assert (hits > 100) == drawn, (label, hits)
    # the earlier packed form draws the same picture, with a DeprecationWarning
    with pytest.warns(DeprecationWarning, match="train_batch_image: packed"):
        assert np.array_equal(train_batch_image(images.numpy(), targets.numpy(), mask.numpy(), names), picture)
    path = plot_train_batch({"images": images, "targets": batch_targets}, names,
                            tmp_path / "train_batch0.jpg")
    with Image.open(path) as im:
        assert im.format == "JPEG" and im.size == (picture.shape[1], picture.shape[0])


def test_results_png_skips_empty_cells_and_the_minus_one_sentinel(tmp_path):
    header = ["epoch", "lr", "train/loss", "train/cls_loss", "AP", "AP50", "APl", "time_s"]
    rows = [[1, 0.01, 5.0, 2.0, "", "", "", 3.0], [2, 0.008, 4.0, 1.5, 0.1, 0.2, -1, 3.0],
            [3, 0.004, 3.5, 1.2, "", "", "", 3.0], [4, 0.001, 3.0, 1.0, 0.2, 0.35, -1, 3.0]]
    csv_path = tmp_path / "results.csv"
    with csv_path.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    epochs, columns = read_results(csv_path)
    assert epochs.tolist() == [1, 2, 3, 4] and "time_s" not in columns
    assert np.isnan(columns["AP"][[0, 2]]).all() and columns["AP"][3] == 0.2
    assert np.isnan(columns["APl"]).all()  # -1: no large objects, not a score
    fig = results_figure(epochs, columns)
    assert [ax.get_title() for ax in fig.axes] == ["train/loss", "train/cls_loss", "AP", "AP50", "lr"]
    assert _overflowing_text(fig) == []
    ap_line = fig.axes[2].get_lines()[0]
    assert ap_line.get_xdata().tolist() == [2, 4]  # evaluated epochs only, joined
    _png(plot_results(csv_path, tmp_path / "results.png"))


# ---------------------------------------------------------------------------------------- a training run


def test_training_run_writes_its_pictures(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cspdet.config import config_from_dict
    from cspdet.data.synthetic import make_shapes_dataset
    from cspdet.engine.trainer import Trainer

    make_shapes_dataset(tmp_path / "shapes", num_train=6, num_val=3, size=64, seed=0)
    desc = tmp_path / "shapes.yaml"
    desc.write_text(f"format: coco\npath: {tmp_path / 'shapes'}\n"
                    "train: {images: images/train, annotations: annotations/instances_train.json}\n"
                    "val: {images: images/val, annotations: annotations/instances_val.json}\n")
    cfg = config_from_dict({
        "model": {"name": "cspdarknet_s", "num_classes": 3, "depth": 0.33, "width": 0.125},
        "data": {"dataset": str(desc), "img_size": [64, 64], "workers": 0},
        "train": {"epochs": 1, "batch_size": 2, "warmup_epochs": 0, "no_aug_epochs": 0, "eval_interval": 1,
                  "output_dir": str(tmp_path / "runs"), "name": "run", "log_images": 0, "device": "cpu"},
        "eval": {"img_size": [64, 64], "batch_size": 3},
    })
    run = Path(Trainer(cfg, progress=False).fit()["run_dir"])
    _png(run / "labels.png")
    _png(run / "results.png")
    for i in range(3):  # 6 images / batch 2: three batches, all drawn
        with Image.open(run / f"train_batch{i}.jpg") as im:
            assert im.format == "JPEG" and im.width >= 2 * 256
    assert not (run / "train_batch3.jpg").exists()
    for name in EVAL_PLOTS:  # the final evaluation's pictures
        _png(run / "eval" / name)
    assert not list(run.rglob(".*.tmp"))
    # 64 px images hold no large objects: COCOeval's APl is -1, which results.csv keeps and TensorBoard skips
    with (run / "results.csv").open() as fh:
        assert float(next(csv.DictReader(fh))["APl"]) == -1
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"val/AP", "val/AP50", "val/APs"} <= scalars and "val/APl" not in scalars


def _tiny_gt():
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "width": 64, "height": 64}], "categories": [{"id": 1, "name": "a"}],
                  "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400,
                                   "iscrowd": 0}]}
    gt.createIndex()
    return gt


def test_pictures_are_written_atomically(tmp_path, disk_full):
    from cspdet.fileio import OutputError

    csv_path = tmp_path / "results.csv"
    csv_path.write_text("epoch,lr,train/loss,AP\n1,0.01,3.0,0.1\n2,0.005,2.0,0.2\n")
    batch = {"images": np.full((2, 3, 32, 32), 114, np.uint8), "targets": Targets.empty(2)}
    writes = [(lambda: plot_results(csv_path, tmp_path / "results.png"), "results.png"),
              (lambda: plot_train_batch(batch, ["a"], tmp_path / "train_batch0.jpg"), "train_batch0.jpg")]
    for write, _ in writes:
        write()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    disk_full(room=10)
    for write, name in writes:
        with pytest.raises(OutputError, match=rf"disk full while saving .*{name}; the previous {name} is intact"):
            write()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_picture_that_cannot_be_drawn_costs_no_scores(tmp_path, monkeypatch, caplog):
    from cspdet.engine import plots
    from cspdet.engine.evaluator import COCOEvaluator

    def broken(*args, **kwargs):
        raise RuntimeError("no font")

    monkeypatch.setattr(plots, "write_eval_plots", broken)
    evaluator = COCOEvaluator([], coco_gt=_tiny_gt(), category_ids=[1], class_names=["a"])
    det = {"image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "score": 0.9}
    metrics = evaluator._score_and_write({1: [det]}, tmp_path, plots=True)
    assert metrics.stats["AP"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "metrics.json").read_text())["AP"] == pytest.approx(1.0)
    assert "could not draw the evaluation plots" in caplog.text and "no font" in caplog.text
