"""cspdet.data.visualize: one palette and one box drawer for detect.py (Results.plot) and show_dataset.py."""

from __future__ import annotations

import cv2
import numpy as np

from cspdet.data.visualize import class_color, draw_boxes, write_grid
from cspdet.runtime.predictor import Results

NAMES = ["red", "green", "blue"]  # the classes of the crafted ``coco_dir`` dataset


def _count(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    """Pixels of exactly ``colour`` in an (H, W, 3) RGB image."""
    return int((image == np.array(colour, np.uint8)).all(axis=2).sum())


def test_palette_is_stable_and_distinct():
    colours = [class_color(k) for k in range(80)]
    assert colours == [class_color(k) for k in range(80)]
    assert class_color(np.int64(5)) == colours[5]  # numpy labels (Results.labels) get the same colour
    assert len(set(colours[:20])) == 20
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colours)


def test_one_colour_per_class_in_results_plot_and_show_dataset(coco_dir, tmp_path):
    # detect.py: Results.plot on a plain image with one box per class
    image = np.full((120, 200, 3), 40, np.uint8)
    boxes = np.array([[10, 30, 60, 80], [70, 30, 120, 80], [130, 30, 190, 80]], np.float32)
    res = Results(image=image, boxes=boxes, scores=np.array([0.9, 0.8, 0.7], np.float32),
                  labels=np.array([0, 1, 2]), class_names=NAMES)
    plotted = res.plot()
    # show_dataset.py (its main draws with the package's write_grid): a grid of the crafted dataset (classes 0 and 2
    # in image 1, class 1 in image 2)
    out = tmp_path / "grid.png"  # lossless, so the drawn colours survive the file
    write_grid(coco_dir / "dataset.yaml", "train", str(out), num=3, img_size=96, cols=3)
    grid = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    for k in range(3):
        # the filled label patches are in the class colour at both call sites
        assert _count(plotted, class_color(k)) > 40, k
        assert _count(grid, class_color(k)) > 40, k
    # and both draw with the same function: Results.plot is draw_boxes on its own fields
    np.testing.assert_array_equal(plotted, draw_boxes(image, boxes, res.labels, NAMES, scores=res.scores))
    np.testing.assert_array_equal(res.plot(show_scores=False, line_width=3),
                                  draw_boxes(image, boxes, res.labels, NAMES, line_width=3))


def test_draw_boxes_keeps_the_input_and_names_unknown_labels():
    image = np.zeros((50, 80, 3), np.uint8)
    drawn = draw_boxes(image, np.array([[5, 20, 40, 45]]), np.array([7]), ["only"])
    assert image.max() == 0 and drawn.shape == image.shape and _count(drawn, class_color(7)) > 20
    np.testing.assert_array_equal(draw_boxes(image, np.zeros((0, 4)), np.zeros(0, np.int64), ["only"]), image)
