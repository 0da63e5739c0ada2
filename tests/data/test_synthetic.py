"""cspdet.data.synthetic: the generated shapes dataset is deterministic, exact and readable by cspdet."""

from __future__ import annotations

import numpy as np

from cspdet.data import build_dataset
from cspdet.data.synthetic import SHAPE_NAMES, draw_shapes_image, make_shapes_dataset


def test_boxes_enclose_exactly_the_shape_pixels():
    rng = np.random.default_rng(3)
    for _ in range(20):
        image, boxes, labels = draw_shapes_image(rng, size=96, min_side=12)
        assert boxes.dtype == np.float32 and labels.dtype == np.int64
        assert len(boxes) == len(labels) >= 1
        assert ((boxes >= 0) & (boxes <= 96)).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        # objects never overlap, so every box is a truthful label of a fully visible shape
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                lt = np.maximum(boxes[i, :2], boxes[j, :2])
                rb = np.minimum(boxes[i, 2:], boxes[j, 2:])
                assert not (rb > lt).all()


def test_dataset_is_deterministic_and_loads(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", num_train=6, num_val=3, size=64, seed=1)
    b = make_shapes_dataset(tmp_path / "b", num_train=6, num_val=3, size=64, seed=1)
    assert (a / "annotations" / "instances_train.json").read_text() == (
        b / "annotations" / "instances_train.json").read_text()
    descriptor = {
        "format": "coco", "path": str(a),
        "train": {"images": "images/train", "annotations": "annotations/instances_train.json"},
        "val": {"images": "images/val", "annotations": "annotations/instances_val.json"},
    }
    train = build_dataset(descriptor, "train", strict=True)
    assert len(train) == 6 and train.class_names == list(SHAPE_NAMES)
    sample = train.load_sample(0)
    assert sample.image.shape == (64, 64, 3) and sample.image.dtype == np.uint8
    assert len(build_dataset(descriptor, "val", strict=True)) == 3


def test_existing_dataset_with_same_parameters_is_reused(tmp_path):
    root = make_shapes_dataset(tmp_path, num_train=2, num_val=1, size=64)
    stamp = (root / "synthetic.json").stat().st_mtime_ns
    make_shapes_dataset(tmp_path, num_train=2, num_val=1, size=64)
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp
