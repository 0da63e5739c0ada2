"""Issue 24, end to end in a training run: an annotation that points outside the dataset and undecodable images in
the train and val splits are skipped with counted warnings on every path the run decodes images (RAM-cache warm-up,
train loader in a worker, evaluation, the TensorBoard image log) -- the run finishes instead of a traceback."""

from __future__ import annotations

import json
import warnings

from cspdet.config import config_from_dict
from cspdet.data import DatasetWarning
from cspdet.data.synthetic import make_shapes_dataset
from cspdet.engine.trainer import Trainer


def test_a_run_skips_escaping_and_undecodable_images(tmp_path):
    make_shapes_dataset(tmp_path / "shapes", num_train=6, num_val=3, size=64, seed=0)
    root = tmp_path / "shapes"
    ann = root / "annotations" / "instances_train.json"
    data = json.loads(ann.read_text())
    data["images"][0]["file_name"] = "../../../../../../../../../etc/passwd"
    ann.write_text(json.dumps(data))
    for split in ("train", "val"):  # the second image of each split: a truncated JPEG
        bad = sorted((root / "images" / split).iterdir())[1]
        bad.write_bytes(bad.read_bytes()[:300])
    desc = tmp_path / "shapes.yaml"
    desc.write_text(f"format: coco\npath: {root}\n"
                    "train: {images: images/train, annotations: annotations/instances_train.json}\n"
                    "val: {images: images/val, annotations: annotations/instances_val.json}\n")
    cfg = config_from_dict({
        "model": {"name": "cspdarknet_nano", "num_classes": 3, "width": 0.125},
        "data": {"dataset": str(desc), "img_size": [64, 64], "workers": 1, "cache": True},
        "train": {"epochs": 1, "batch_size": 3, "output_dir": str(tmp_path / "runs"), "name": "run",
                  "log_images": 3, "device": "cpu"},
        "eval": {"img_size": [64, 64], "batch_size": 3},
    })
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(cfg, progress=False)
        summary = trainer.fit()
    assert summary["epoch"] == 1
    assert trainer.train_set.skipped.counts == {"path_outside_dataset": 1, "truncated_image": 1}
    assert trainer.val_set.skipped.counts == {"truncated_image": 1}
    texts = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    assert any("path_outside_dataset" in t and "etc/passwd" in t for t in texts)
    assert sum("truncated_image" in t and "(skipped)" in t for t in texts) == 2  # each file named once
