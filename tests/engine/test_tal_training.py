"""The task-aligned family through the engine: training with the head's own losses and schedule, evaluation and
prediction in both modes (NMS-free one-to-one top-k, NMS on the one-to-many branch), multi-label NMS, and the
``optimizer: auto`` recipe."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from cspdet import Predictor
from cspdet.config import config_from_dict
from cspdet.det.postprocess import postprocess
from cspdet.runtime.checkpoint import load_checkpoint
from cspdet.engine.evaluator import COCOEvaluator
from cspdet.engine.optim import AUTO_SGD_ITERATIONS, resolve_optimizer
from cspdet.engine.trainer import Trainer


@pytest.fixture(scope="module")
def run(shapes_descriptor, tmp_path_factory):
    raw = {
        "model": {"name": "csptal_n", "num_classes": 3, "width": 0.125},
        "data": {"dataset": str(shapes_descriptor), "img_size": [64, 64], "workers": 0},
        "train": {"epochs": 3, "batch_size": 4, "warmup_epochs": 1, "no_aug_epochs": 1, "eval_interval": 1,
                  "optimizer": "auto", "output_dir": str(tmp_path_factory.mktemp("runs")), "name": "tal",
                  "log_images": 0, "device": "cpu"},
        "eval": {"img_size": [64, 64], "batch_size": 4},
    }
    trainer = Trainer(config_from_dict(raw), progress=False)
    summary = trainer.fit()
    return trainer, Path(summary["run_dir"])


def test_training_logs_the_heads_losses_and_follows_its_schedule(run):
    trainer, run_dir = run
    with (run_dir / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and {"train/box_loss", "train/dfl_loss", "train/cls_loss"} <= rows[0].keys()
    assert all(float(r["train/loss"]) > 0 and r["AP"] != "" for r in rows)
    # each branch's own total is logged beside the mix (the hand-over's curves)
    assert all(float(r["train/o2m_loss"]) > 0 and float(r["train/o2o_loss"]) > 0 for r in rows)
    # the one-to-many weight decayed over the run (0.8 at epoch 1 -> 0.1 at the last)
    assert trainer.model.head.o2m_weight == pytest.approx(0.1)
    # optimizer auto on 8 images x 3 epochs: AdamW at the class-count-aware lr
    assert isinstance(trainer.optimizer, torch.optim.AdamW) and trainer.base_lr == round(0.002 * 5 / 7, 6)
    ckpt = load_checkpoint(run_dir / "best.pt", kind="detector")
    assert ckpt["spec"]["head"]["kind"] == "tal" and ckpt["spec"]["head"]["options"]["one2one"] is True


def test_both_inference_modes_evaluate_and_predict(run):
    trainer, run_dir = run
    model = trainer.eval_model()
    evaluator = COCOEvaluator(trainer.val_loader, nms_free=True)
    free = evaluator.evaluate(model, plots=False)
    nms = COCOEvaluator(trainer.val_loader, nms_free=False).evaluate(model, plots=False)
    assert free.extra["nms_free"] is True and nms.extra["nms_free"] is False
    assert 0 <= free.stats["AP"] <= 1 and 0 <= nms.stats["AP"] <= 1
    assert model.nms_free  # the evaluator restores the model's own mode
    image = np.full((64, 64, 3), 255, np.uint8)
    image[16:48, 16:48] = (255, 0, 0)
    for nms_free in (True, False):
        predictor = Predictor.from_checkpoint(run_dir / "best.pt", conf=0.01, nms_free=nms_free)
        assert predictor.model.nms_free is nms_free
        (res,) = predictor(image)
        assert res.boxes.shape[1] == 4 and np.isfinite(res.boxes).all()


def test_multi_label_postprocess_keeps_every_class_above_conf():
    # one point, two classes above conf: one candidate single-label, two multi-label
    preds = torch.tensor([[[32.0, 32.0, 10.0, 10.0, 1.0, 0.9, 0.6, 0.01]]])
    single = postprocess(preds, conf=0.5)[0]
    multi = postprocess(preds, conf=0.5, multi_label=True)[0]
    assert single["labels"].tolist() == [0]
    assert sorted(multi["labels"].tolist()) == [0, 1] and multi["scores"].tolist() == pytest.approx([0.9, 0.6])
    # the same box in two classes survives class-aware NMS; class-agnostic NMS keeps the better one
    assert postprocess(preds, conf=0.5, multi_label=True, agnostic=True)[0]["labels"].tolist() == [0]
    assert postprocess(preds, conf=0.5, multi_label=True, classes=[1])[0]["labels"].tolist() == [1]


def test_optimizer_auto_picks_by_schedule_length():
    short = resolve_optimizer("auto", num_images=160, batch_size=16, accumulate=1, epochs=30, num_classes=1,
                              lr_per_image=0.01 / 64)
    assert (short.name, short.base_lr) == ("adamw", 0.002)
    coco = resolve_optimizer("auto", num_images=118_287, batch_size=64, accumulate=1, epochs=300, num_classes=80,
                             lr_per_image=0.01 / 64)
    assert coco.name == "sgd" and coco.base_lr == pytest.approx(0.01) and str(AUTO_SGD_ITERATIONS) in coco.reason
    fixed = resolve_optimizer("sgd", num_images=10, batch_size=8, accumulate=2, epochs=1, num_classes=3,
                              lr_per_image=0.001)
    assert (fixed.name, fixed.base_lr) == ("sgd", pytest.approx(0.016))
