"""Parameter groups, optimizers and the learning-rate schedules (values at key iterations)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cspdet.engine.optim import (
    CosineSchedule,
    YoloxSchedule,
    build_optimizer,
    cosine_lr,
    param_groups,
    set_lr,
    yolox_lr,
)


def _tiny() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.SiLU(),
        nn.Conv2d(4, 4, 1), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4, 2),
    )


def test_param_groups_split_norm_weights_biases_and_decayed_weights():
    model = _tiny()
    groups = param_groups(model, weight_decay=5e-4)
    names = [g["name"] for g in groups]
    assert names == ["norm", "weight", "bias"]
    by_name = {g["name"]: {id(p) for p in g["params"]} for g in groups}
    conv0, bn, conv3, gn, lin = model[0], model[1], model[3], model[4], model[6]
    assert by_name["norm"] == {id(bn.weight), id(gn.weight)}
    assert by_name["weight"] == {id(conv0.weight), id(conv3.weight), id(lin.weight)}
    assert by_name["bias"] == {id(bn.bias), id(conv3.bias), id(gn.bias), id(lin.bias)}
    assert [g["weight_decay"] for g in groups] == [0.0, 5e-4, 0.0]
    # every trainable parameter exactly once
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(all_ids) == sorted(id(p) for p in model.parameters())


def test_param_groups_skip_frozen_and_shared_parameters():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, nn.ReLU(), lin, nn.BatchNorm1d(3))
    model[3].weight.requires_grad_(False)
    groups = param_groups(model, 1e-4)
    assert sum(len(g["params"]) for g in groups) == 3  # lin.weight, lin.bias, bn.bias


def test_build_optimizer_sgd_nesterov_and_adamw():
    model = _tiny()
    sgd = build_optimizer(model, "sgd", lr=0.02, momentum=0.9, weight_decay=5e-4, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD)
    assert all(g["nesterov"] and g["momentum"] == 0.9 and g["lr"] == 0.02 for g in sgd.param_groups)
    assert [g["weight_decay"] for g in sgd.param_groups] == [0.0, 5e-4, 0.0]
    adamw = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05)
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.0, 0.05, 0.0]
    set_lr(adamw, 0.5)
    assert all(g["lr"] == 0.5 for g in adamw.param_groups)
    with pytest.raises(ValueError, match="optimizer 'lamb'"):
        build_optimizer(model, "lamb")


def test_yolox_schedule_key_iterations():
    # 10 epochs x 100 iterations, 2 warm-up epochs, 3 no-aug epochs (YOLOX's shape at small scale).
    base, total, warm, no_aug = 0.01, 1000, 200, 300

    def lr(it: float) -> float:
        return yolox_lr(it, base_lr=base, total_iters=total, warmup_iters=warm, no_aug_iters=no_aug,
                        warmup_lr=0.0, min_lr_ratio=0.05)

    min_lr = base * 0.05
    assert lr(0) == 0.0
    assert lr(100) == pytest.approx(base * 0.25)  # quadratic: (1/2)^2
    assert lr(50) == pytest.approx(base / 16)
    assert lr(200) == pytest.approx(base)  # end of warm-up = peak
    assert lr(201) == pytest.approx(base, rel=1e-4)  # cosine starts at the peak: continuous
    mid = 200 + (1000 - 200 - 300) / 2
    assert lr(mid) == pytest.approx(min_lr + 0.5 * (base - min_lr))
    assert lr(699) == pytest.approx(min_lr, rel=1e-3)  # cosine reaches min_lr where the flat tail begins
    assert lr(700) == min_lr and lr(850) == min_lr and lr(1000) == min_lr
    values = [lr(i) for i in range(201, 700)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay


def test_yolox_schedule_warmup_lr_and_record():
    sched = YoloxSchedule(base_lr=0.04, total_iters=100, warmup_iters=10, no_aug_iters=20, warmup_lr=0.001)
    assert sched(0) == pytest.approx(0.001)
    assert sched(10) == pytest.approx(0.04)
    assert sched(5) == pytest.approx(0.001 + (0.04 - 0.001) * 0.25)
    assert sched.state_dict() == {"type": "yolox", "base_lr": 0.04, "total_iters": 100, "warmup_iters": 10,
                                  "no_aug_iters": 20, "warmup_lr": 0.001, "min_lr_ratio": 0.05}
    # no room for a cosine: warm-up straight into the flat tail
    short = YoloxSchedule(base_lr=1.0, total_iters=10, warmup_iters=5, no_aug_iters=10)
    assert short(7) == pytest.approx(0.05)


def test_cosine_schedule_key_iterations():
    def lr(it: float) -> float:
        return cosine_lr(it, base_lr=0.1, total_iters=110, warmup_iters=10, warmup_lr=0.0, min_lr=0.001)

    assert lr(0) == 0.0
    assert lr(5) == pytest.approx(0.05)  # linear warm-up
    assert lr(10) == pytest.approx(0.1)
    assert lr(60) == pytest.approx(0.001 + 0.5 * (0.1 - 0.001))
    assert lr(110) == pytest.approx(0.001)
    assert lr(500) == pytest.approx(0.001)  # clamped past the end
    sched = CosineSchedule(base_lr=0.1, total_iters=110, warmup_iters=10, min_lr=0.001)
    assert sched(60) == pytest.approx(lr(60)) and sched.state_dict()["type"] == "cosine"
    assert math.isclose(cosine_lr(0, base_lr=0.2, total_iters=10), 0.2)  # no warm-up starts at the peak


# ------------------------------------------------------------------------------------------ named schedules


def test_yolox_cosine_is_the_default_named_schedule():
    from cspdet.config import TrainConfig
    from cspdet.engine.optim import DEFAULT_SCHEDULE, SCHEDULES, ScheduleRequest, build_schedule, with_scaled_schedule

    assert TrainConfig().schedule == DEFAULT_SCHEDULE == "yolox_cosine" and "yolox_cosine" in SCHEDULES
    req = ScheduleRequest(base_lr=0.04, epochs=10, iters_per_epoch=10, warmup_epochs=1.5, no_aug_epochs=2,
                          warmup_lr=0.001, min_lr_ratio=0.1)
    # a checkpoint written before train.schedule existed resumes: its config compares as the default's
    old = {"train": {"epochs": 300, "warmup_epochs": 5, "no_aug_epochs": 15}}
    assert with_scaled_schedule(old)["train"]["schedule"] == "yolox_cosine"
    assert build_schedule("yolox_cosine", req) == YoloxSchedule(base_lr=0.04, total_iters=100, warmup_iters=15,
                                                                no_aug_iters=20, warmup_lr=0.001, min_lr_ratio=0.1)


def test_unknown_schedule_is_a_config_error_listing_the_choices(tmp_path):
    from cspdet.config import ConfigError, config_from_dict
    from cspdet.engine.optim import check_schedule
    from cspdet.engine.trainer import Trainer

    with pytest.raises(ConfigError, match=r"^train.schedule: unknown schedule 'cosine_yolox' \(expected one of "
                                          r"yolox_cosine(, \w+)*\)$"):
        check_schedule("cosine_yolox")
    cfg = config_from_dict({"data": {"dataset": str(tmp_path / "missing.yaml")}, "train": {"schedule": "nope"}})
    with pytest.raises(ConfigError, match=r"^train.schedule: unknown schedule 'nope'"):
        Trainer(cfg, run_dir=tmp_path / "run", progress=False)  # refused before the (missing) dataset is read
    assert not (tmp_path / "run").exists()


def test_a_second_schedule_registered_from_a_test_file_trains(tmp_path, monkeypatch):
    """A flat schedule is one registered function; ``train.schedule`` selects it, the optimizer follows it, the
    checkpoint records it and the run header names it. The default schedule is unaffected."""
    from dataclasses import dataclass

    from test_trainer import tiny_raw, write_shapes_descriptor  # tests/engine/test_trainer.py

    from cspdet.config import config_from_dict
    from cspdet.engine import optim
    from cspdet.engine.trainer import Trainer
    from cspdet.runtime.checkpoint import load_checkpoint

    monkeypatch.setattr(optim, "SCHEDULES", dict(optim.SCHEDULES))  # the registration ends with the test

    @dataclass(frozen=True)
    class FlatSchedule:
        lr: float

        def __call__(self, iteration):
            return self.lr

        def state_dict(self):
            return {"type": "flat", "lr": self.lr}

    @optim.register_schedule("flat_half")
    def flat_half(req: optim.ScheduleRequest) -> FlatSchedule:
        return FlatSchedule(req.base_lr / 2)

    with pytest.raises(ValueError, match="'flat_half' is already registered"):
        optim.register_schedule("flat_half")(flat_half)
    shapes = write_shapes_descriptor(tmp_path / "shapes")
    cfg = config_from_dict(tiny_raw(shapes, tmp_path, epochs=1, no_aug_epochs=0, schedule="flat_half"))
    trainer = Trainer(cfg, run_dir=tmp_path / "flat", progress=False)
    assert trainer.schedule == FlatSchedule(trainer.base_lr / 2)
    assert " (flat_half schedule)" in next(line for line in trainer.header() if line.startswith("schedule  "))
    lrs = []
    trainer.callbacks.append(type("LR", (), {"on_batch_end": lambda self, run, b: lrs.append(b.lr)})())
    trainer.fit()
    assert lrs == [trainer.base_lr / 2] * trainer.iters_per_epoch
    assert {g["lr"] for g in trainer.optimizer.param_groups} == {trainer.base_lr / 2}
    last = load_checkpoint(tmp_path / "flat" / "last.pt")
    assert last["trainer"]["schedule"] == {"type": "flat", "lr": trainer.base_lr / 2}
    assert last["config"]["train"]["schedule"] == "flat_half"
