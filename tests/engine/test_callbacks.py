"""The callback events beyond the training loop -- ``on_val_end`` (COCO evaluation), ``on_predict_batch_end``
(Predictor), ``on_export_end`` (export) -- and the one loop firing the same training events for classification
as for detection. Each test adds a plain user object (no subclassing) and checks the arguments it receives."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import cv2
import numpy as np
from test_classify import make_imagefolder, pretrain_raw  # tests/engine/test_classify.py

from cspdet.config import config_from_dict
from cspdet.engine import callbacks as engine_callbacks
from cspdet.engine.classify import ClassifierTrainer
from cspdet.engine.coco_metrics import COCOMetrics
from cspdet.engine.evaluator import COCOEvaluator
from cspdet.runtime import callbacks as runtime_callbacks
from cspdet.runtime.predictor import Predictor, Results


class Calls:
    """Records ``(hook, *args)`` of the hooks it is given names of."""

    def __init__(self, *hooks: str):
        self.calls: list[tuple] = []
        for hook in hooks:
            setattr(self, hook, lambda *args, _hook=hook: self.calls.append((_hook, *args)))


def test_the_callback_base_lives_in_the_runtime_and_engine_re_exports_it():
    assert engine_callbacks.Callback is runtime_callbacks.Callback
    assert engine_callbacks.CallbackList is runtime_callbacks.CallbackList
    base = runtime_callbacks.Callback()
    assert all(callable(getattr(base, hook)) for hook in runtime_callbacks.EVENTS)
    assert {"on_val_end", "on_predict_batch_end", "on_export_end"} <= set(runtime_callbacks.EVENTS)
    shared = runtime_callbacks.CallbackList()
    assert runtime_callbacks.CallbackList.of(shared) is shared and runtime_callbacks.CallbackList.of(None) == []


def test_on_val_end_gets_the_evaluator_and_the_metrics_it_returns(tiny, shapes_descriptor):
    cfg = tiny.config(img_size=64)
    cfg.data.dataset = str(shapes_descriptor)
    cfg.eval.batch_size = 4
    user = Calls("on_val_end")
    evaluator = COCOEvaluator.from_config(cfg, callbacks=[user])  # what `cspdet val` builds
    metrics = evaluator.evaluate(tiny.detector(cfg), plots=False)
    assert len(user.calls) == 1
    hook, source, got = user.calls[0]
    assert hook == "on_val_end" and source is evaluator and got is metrics and isinstance(got, COCOMetrics)
    assert set(got.stats) >= {"AP", "AP50"}
    evaluator.evaluate(tiny.detector(cfg), plots=False)
    assert len(user.calls) == 2  # once per evaluation


def test_on_predict_batch_end_gets_each_forward_pass_results(tiny, tmp_path):
    cfg = tiny.config()
    user = Calls("on_predict_batch_end")
    predictor = Predictor(tiny.detector(cfg), tiny.names, img_size=128, conf=0.2, batch_size=2, callbacks=[user])
    predictor.warmup()  # a blank warm-up image is no prediction
    assert user.calls == []
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, size=(64 + 8 * i, 96, 3), dtype=np.uint8) for i in range(3)]
    results = predictor(images)
    assert [len(c[2]) for c in user.calls] == [2, 1]  # batches of batch_size
    assert all(c[0] == "on_predict_batch_end" and c[1] is predictor for c in user.calls)
    assert [r for c in user.calls for r in c[2]] == results and all(isinstance(r, Results) for r in results)

    user.calls.clear()
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for image in images:
        writer.write(cv2.cvtColor(image[:64], cv2.COLOR_RGB2BGR))
    writer.release()
    frames = list(predictor.predict_video(clip))
    assert [[r.frame for r in c[2]] for c in user.calls] == [[0, 1], [2]]  # the hook sees the frame indices
    assert [r for c in user.calls for r in c[2]] == frames


def test_on_export_end_gets_the_model_and_the_written_file(tiny, shapes_checkpoint, tmp_path):
    from cspdet.export import export_model

    user = Calls("on_export_end")
    result = export_model(shapes_checkpoint, "torchscript", out=tmp_path / "tiny", callbacks=[user])
    assert len(user.calls) == 1
    hook, model, got = user.calls[0]
    assert hook == "on_export_end" and got is result and got.path == tmp_path / "tiny.torchscript"
    assert got.path.is_file() and got.format == "torchscript"
    assert model.num_classes == 3 and list(model.meta.class_names) == tiny.names  # the detector that was exported


def test_classification_runs_fire_the_training_events_of_the_one_loop(tmp_path):
    """The loop is shared, so a classification run fires the events a detection run fires, with the classifier's
    batch (images, labels) in ``on_batch_start``; ``on_val_end`` stays with COCO evaluations."""
    folder = make_imagefolder(tmp_path / "folder")
    cfg = config_from_dict(pretrain_raw(folder, tmp_path, epochs=2))
    trainer = ClassifierTrainer(cfg, run_dir=tmp_path / "cls", progress=False)
    user = Calls(*runtime_callbacks.EVENTS)
    trainer.callbacks.append(user)
    summary = trainer.fit()
    names = [c[0] for c in user.calls]
    per_epoch = (["on_epoch_start"] + ["on_batch_start", "on_batch_end"] * trainer.iters_per_epoch
                 + ["on_eval_end", "on_epoch_end"])
    assert names == ["on_run_start", *per_epoch, *per_epoch, "on_run_end"]
    starts = [c for c in user.calls if c[0] == "on_batch_start"]
    images, labels = starts[0][4]
    assert starts[0][1:4] == (trainer, 0, 0) and images.shape[0] == labels.shape[0] == trainer.train_loader.batch_size
    ends = [c[2] for c in user.calls if c[0] == "on_batch_end"]
    assert [b.iteration for b in ends] == list(range(1, 2 * trainer.iters_per_epoch + 1))
    assert all(set(b.losses) == {"loss"} for b in ends)
    assert user.calls[-1] == ("on_run_end", trainer, summary) and summary["best_top1"] == trainer.best_score


def test_a_detection_run_fires_on_val_end_after_each_coco_evaluation(shapes_descriptor, tmp_path):
    """A logger added to a detection run sees each of its COCO evaluations through on_val_end too (the run's
    evaluator shares its callback list), before the run's own on_eval_end with the same numbers."""
    from test_trainer import tiny_raw  # tests/engine/test_trainer.py

    from cspdet.engine.trainer import Trainer

    cfg = config_from_dict(tiny_raw(shapes_descriptor, tmp_path, epochs=2, no_aug_epochs=0, log_images=0))
    trainer = Trainer(cfg, run_dir=tmp_path / "det", progress=False)
    user = Calls("on_val_end", "on_eval_end")
    trainer.callbacks.append(user)
    trainer.fit()
    assert [c[0] for c in user.calls] == ["on_val_end", "on_eval_end"] * 2
    for (_, evaluator, coco), (_, run, epoch, metrics) in zip(user.calls[::2], user.calls[1::2]):
        assert evaluator is trainer.evaluator and run is trainer
        assert {k: float(v) for k, v in coco.stats.items()} == metrics


def test_results_csv_realigns_the_rows_of_a_run_resumed_from_a_version_with_other_columns(tmp_path):
    """A run started before a head logged more terms, resumed after: earlier rows keep their values under their
    column names, new columns are empty for them (never shifted under another column)."""
    path = tmp_path / "results.csv"
    path.write_text("epoch,lr,train/loss,AP,time_s\n1,0.01,5.00000,0.10000,3.0\n")
    header = ["epoch", "lr", "train/loss", "train/o2o_loss", "AP", "time_s"]
    run = SimpleNamespace(is_main=True, csv_path=path,
                          results_row=lambda stats: (header, [2, "0.01", "4.00000", "3.50000", "0.20000", "2.5"]))
    engine_callbacks.ResultsLogger().on_epoch_end(run, None)
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == header
    assert rows[0] == {"epoch": "1", "lr": "0.01", "train/loss": "5.00000", "train/o2o_loss": "", "AP": "0.10000",
                       "time_s": "3.0"}
    assert rows[1]["train/o2o_loss"] == "3.50000" and rows[1]["AP"] == "0.20000"
