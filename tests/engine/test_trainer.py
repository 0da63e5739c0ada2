"""Detection trainer on CPU with a tiny CSPDarknet (width 0.125) on 64 px synthetic shapes.

Covers: run-directory outputs (config, last/best, results.csv, TensorBoard), exact resume (2 epochs straight ==
1 + resume 1), resume refusals (finished run, changed config, weights-only file), NaN guard, atomic saves,
gradient accumulation + clipping + bf16, and model.weights initialisation from a cspdet detector checkpoint.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from weights_helpers import cspdet_to_yolox_state_dict  # tests/weights_helpers.py
from cspdet.config import config_from_dict, load_config
from cspdet.data.synthetic import make_shapes_dataset
from cspdet.runtime import checkpoint as checkpoint_module
from cspdet.engine.build import build_detector, init_weights
from cspdet.runtime.weights import state_kind as detect_weights_format
from cspdet.runtime.checkpoint import CheckpointError, load_checkpoint
from cspdet.engine.run import NonFiniteLossError, ResumeError, RunFinished, new_run_dir
from cspdet.engine.rundir import clear_run_outputs
from cspdet.engine.trainer import Trainer


def write_shapes_descriptor(root: Path, num_train: int = 8, num_val: int = 4, size: int = 64) -> Path:
    """A tiny COCO-layout dataset (3 classes) and its descriptor YAML; returns the YAML path."""
    make_shapes_dataset(root / "shapes", num_train=num_train, num_val=num_val, size=size, seed=0)
    yaml_path = root / "shapes.yaml"
    yaml_path.write_text(
        f"format: coco\npath: {root / 'shapes'}\n"
        "train: {images: images/train, annotations: annotations/instances_train.json}\n"
        "val: {images: images/val, annotations: annotations/instances_val.json}\n"
    )
    return yaml_path


def tiny_raw(dataset: Path, output_dir: Path, **train) -> dict:
    """Plain config dict: CSPDarknet depth 0.33 width 0.125, 64 px, batch 4, 2 epochs (the second no-aug)."""
    return {
        "model": {"name": "cspdarknet_s", "num_classes": 3, "depth": 0.33, "width": 0.125},
        "data": {"dataset": str(dataset), "img_size": [64, 64], "workers": 0},
        "train": {"epochs": 2, "batch_size": 4, "warmup_epochs": 1, "no_aug_epochs": 1, "eval_interval": 1,
                  "output_dir": str(output_dir), "name": "run", "log_images": 1, "device": "cpu", **train},
        "eval": {"img_size": [64, 64], "batch_size": 4},
    }


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_shapes_descriptor(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def straight(shapes, tmp_path_factory):
    """Two epochs in one go: (config, run directory, summary)."""
    out = tmp_path_factory.mktemp("runs")
    cfg = config_from_dict(tiny_raw(shapes, out))
    summary = Trainer(cfg, run_dir=out / "straight", progress=False).fit()
    return cfg, out / "straight", summary


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((x.double() - y.double()).abs().max().item() if x.numel() else 0.0 for x, y in
               zip(a.values(), (b[k] for k in a)))


def test_run_directory_outputs(straight):
    cfg, run, summary = straight
    assert summary["epoch"] == 2 and summary["run_dir"] == str(run)
    assert load_config(run / "config.yaml") == cfg  # the resolved config reproduces the run
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert list(written) == ["model", "data", "train", "eval"]  # only the sections a detection run uses
    last = torch.load(run / "last.pt", weights_only=True)  # only safe types inside
    best = load_checkpoint(run / "best.pt", kind="detector")
    assert last["format"] == "cspdet" and last["kind"] == "detector" and last["epoch"] == 2
    meta = last["meta"]
    assert last["version"] == 2 and last["spec"] == best["spec"] and last["spec"]["head"]["num_classes"] == 3
    assert meta["class_names"] == ["circle", "square", "triangle"] and meta["category_ids"] == [1, 2, 3]
    assert meta["img_size"] == list(cfg.eval.img_size) and meta["train_img_size"] == list(cfg.data.img_size)
    state = last["trainer"]
    assert {"optimizer", "scaler", "schedule", "iteration", "rng", "model", "ema_updates"} <= state.keys()
    assert state["iteration"] == 4 and state["ema_updates"] == 4  # 8 images / batch 4 x 2 epochs
    assert len(state["optimizer"]["param_groups"]) == 3
    assert "trainer" not in best and "AP" in best["metrics"]
    assert not list(run.glob(".*.tmp"))

    with (run / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[0]["train/l1_loss"]) == 0.0 < float(rows[1]["train/l1_loss"])  # L1 on in the no-aug tail
    assert all(r["AP"] != "" and float(r["train/loss"]) > 0 for r in rows)
    assert float(rows[1]["lr"]) == pytest.approx(0.01 / 64 * 4 * 0.05)  # flat min lr in the no-aug epoch
    assert (run / "eval" / "metrics.json").is_file()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/iou_loss", "train/lr", "val/AP", "val/AP50"} <= set(tags["scalars"])
    assert "val_images/0" in tags["images"]
    # the lr the optimizer actually used at each iteration (2 per epoch): quadratic warm-up over the first
    # epoch's 2 iterations, then the flat 5 % tail of the no-aug epoch
    base = 0.01 / 64 * 4
    lrs = [(e.step, e.value) for e in events.Scalars("train/lr")]
    assert [s for s, _ in lrs] == [1, 2, 3, 4]
    assert [v for _, v in lrs] == pytest.approx([base * (1 / 2) ** 2, base, base * 0.05, base * 0.05])
    assert [e.step for e in events.Scalars("val/AP")] == [2, 4]
    assert len(events.Images("val_images/0")) == 2  # one per evaluation


def test_resume_matches_uninterrupted_run(straight, tmp_path):
    cfg, run, _ = straight
    first = Trainer(cfg, run_dir=tmp_path / "split", progress=False)
    assert first.fit(stop_after=1)["epoch"] == 1
    assert load_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 1
    resumed = Trainer(cfg, resume=tmp_path / "split" / "last.pt", progress=False)
    assert (resumed.start_epoch, resumed.iteration) == (1, 2)
    resumed.fit()
    a = torch.load(run / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    raw_diff = _max_diff(a["trainer"]["model"], b["trainer"]["model"])
    ema_diff = _max_diff(a["model"], b["model"])
    print(f"resume max |dw|: raw {raw_diff:.3g}, EMA {ema_diff:.3g}")
    assert raw_diff <= 1e-6 and ema_diff <= 1e-6
    mom_a = [s["momentum_buffer"] for s in a["trainer"]["optimizer"]["state"].values()]
    mom_b = [s["momentum_buffer"] for s in b["trainer"]["optimizer"]["state"].values()]
    assert max((x - y).abs().max().item() for x, y in zip(mom_a, mom_b)) <= 1e-6
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == 4
    with (tmp_path / "split" / "results.csv").open() as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2"]  # one row per epoch across the resume


def test_resume_refuses_finished_changed_or_weights_only(straight, shapes):
    cfg, run, _ = straight
    with pytest.raises(RunFinished, match="already finished all 2 epochs"):
        Trainer(cfg, resume=run, progress=False)
    changed = config_from_dict(tiny_raw(shapes, Path(cfg.train.output_dir), lr_per_image=0.001, epochs=3))
    with pytest.raises(ResumeError, match=r"config differs.*train.epochs: 2 -> 3.*train.lr_per_image"):
        Trainer(changed, resume=run / "last.pt", progress=False)
    with pytest.raises(ResumeError, match="weights only"):
        Trainer(cfg, resume=run / "best.pt", progress=False)
    with pytest.raises(ResumeError, match="not found"):
        Trainer(cfg, resume=run / "missing.pt", progress=False)
    bogus = run.parent / "bogus.pt"
    torch.save({"model": {}}, bogus)
    with pytest.raises(ResumeError, match="not a cspdet checkpoint"):
        Trainer(cfg, resume=bogus, progress=False)


def test_nan_guard_names_batch_and_term(shapes, tmp_path):
    cfg = config_from_dict(tiny_raw(shapes, tmp_path, epochs=1, no_aug_epochs=0))
    trainer = Trainer(cfg, run_dir=tmp_path / "nan", progress=False)
    head = trainer.model.head
    real_loss = head.loss

    def poisoned(*args, **kwargs):
        out = real_loss(*args, **kwargs)
        out["obj_loss"] = out["obj_loss"] * float("nan")
        out["loss"] = out["loss"] + out["obj_loss"]
        return out

    head.loss = poisoned
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, iteration 1/2 in term\(s\) obj_loss.*image ids \["):
        trainer.fit()
    assert _max_diff(before, dict(trainer.model.named_parameters())) == 0.0  # stopped before any step
    assert not (tmp_path / "nan" / "last.pt").exists()


def test_interrupted_save_keeps_previous_checkpoint(straight, tmp_path, monkeypatch):
    cfg, _, _ = straight
    trainer = Trainer(cfg, run_dir=tmp_path / "atomic", progress=False)
    trainer._save(1, trainer.run_dir / "last.pt", {"AP": 0.5}, with_state=True)
    good = (trainer.run_dir / "last.pt").read_bytes()
    real_save = torch.save

    def dying_save(obj, fh, *args, **kwargs):
        fh.write(b"partial garbage")  # a crash after part of the file was written
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        trainer._save(2, trainer.run_dir / "last.pt", {}, with_state=True)
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert (trainer.run_dir / "last.pt").read_bytes() == good
    assert load_checkpoint(trainer.run_dir / "last.pt")["metrics"] == {"AP": 0.5}
    assert not list(trainer.run_dir.glob(".*.tmp"))


def test_accumulation_clipping_bf16(shapes, tmp_path):
    # batch 4 accumulated to a nominal 8: 2 iterations per epoch, 1 optimizer step, lr for batch 8.
    cfg = config_from_dict(tiny_raw(shapes, tmp_path, epochs=1, no_aug_epochs=0, nominal_batch_size=8,
                                    grad_clip=1.0, bf16=True, eval_interval=0, log_images=0))
    trainer = Trainer(cfg, run_dir=tmp_path / "acc", progress=False)
    assert trainer.accumulate == 2 and trainer.base_lr == pytest.approx(0.01 / 64 * 8)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    assert trainer.ema.updates == 1 and trainer.iteration == 2
    assert _max_diff(start, trainer.model.state_dict()) > 0
    with (tmp_path / "acc" / "results.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert torch.isfinite(torch.tensor(float(row["train/loss"])))


def test_init_weights_from_detector_checkpoint(straight, tmp_path):
    cfg, run, _ = straight
    raw = tiny_raw(Path(cfg.data.dataset), tmp_path)
    raw["model"].update(weights=str(run / "best.pt"))
    mcfg = config_from_dict(raw).model
    model = build_detector(mcfg)
    assert detect_weights_format(torch.load(run / "best.pt", weights_only=True)) == "cspdet"
    report = init_weights(model, mcfg)
    assert "initialised the detector" in report
    assert _max_diff(model.state_dict(), load_checkpoint(run / "best.pt")["model"]) == 0.0
    # fine-tuning on a dataset with another number of classes keeps everything but the class outputs
    raw["model"].update(num_classes=5)
    mcfg5 = config_from_dict(raw).model
    model5 = build_detector(mcfg5)
    assert "class-dependent head tensors re-initialised" in init_weights(model5, mcfg5)
    # a checkpoint of another architecture is a clear error
    raw["model"].update(num_classes=3, width=0.25)
    wide = config_from_dict(raw).model
    with pytest.raises(CheckpointError, match="do not fit"):
        init_weights(build_detector(wide), wide)
    junk = tmp_path / "junk.pt"
    torch.save({"foo": torch.zeros(1)}, junk)
    raw["model"].update(width=0.125, weights=str(junk))
    with pytest.raises(CheckpointError, match="cannot tell what kind of weights"):
        init_weights(build_detector(config_from_dict(raw).model), config_from_dict(raw).model)


def test_weights_format_detection():
    assert detect_weights_format({"model": {"backbone.backbone.stem.conv.conv.weight": 0}}) == "yolox"
    assert detect_weights_format({"stem.conv1.conv.weight": 0, "stages.0.conv_down.conv.weight": 0}) == "timm"
    assert detect_weights_format({"format": "cspdet", "kind": "classifier"}) == "cspdet"
    assert detect_weights_format([1, 2]) == ""


def test_new_runs_never_reuse_a_run_directory(tmp_path):
    assert new_run_dir(str(tmp_path), "exp") == str(tmp_path / "exp")
    (tmp_path / "exp").mkdir()
    assert new_run_dir(str(tmp_path), "exp") == str(tmp_path / "exp")  # empty: reuse
    (tmp_path / "exp" / "last.pt").write_bytes(b"x")
    assert new_run_dir(str(tmp_path), "exp") == str(tmp_path / "exp-2")
    (tmp_path / "exp-2").mkdir()
    (tmp_path / "exp-2" / "results.csv").write_text("epoch\n")
    assert new_run_dir(str(tmp_path), "exp") == str(tmp_path / "exp-3")
    # a name that ends in a digit stays readable: coco128, coco128-2 (not coco1282)
    (tmp_path / "coco128").mkdir()
    (tmp_path / "coco128" / "config.yaml").write_text("{}")
    assert new_run_dir(str(tmp_path), "coco128") == str(tmp_path / "coco128-2")
    # exist_ok reuses the directory; once the run holds its lock it clears the earlier outputs (nothing else)
    (tmp_path / "exp-2" / "events.out.tfevents.1.host").write_bytes(b"x")
    (tmp_path / "exp-2" / "notes.txt").write_text("mine")
    assert new_run_dir(str(tmp_path), "exp-2", exist_ok=True) == str(tmp_path / "exp-2")
    clear_run_outputs(tmp_path / "exp-2")
    assert sorted(p.name for p in (tmp_path / "exp-2").iterdir()) == ["notes.txt"]


def test_multiscale_sizes_are_seeded_and_shared(shapes, tmp_path):
    cfg = config_from_dict(tiny_raw(shapes, tmp_path, epochs=3, no_aug_epochs=1) | {
        "data": {"dataset": str(shapes), "img_size": [64, 64], "workers": 0, "multiscale_range": 1}})
    trainer = Trainer(cfg, run_dir=tmp_path / "ms", progress=False)
    sizes = {trainer._multiscale_size(e, i) for e in range(2) for i in range(0, 200, 10)}
    assert sizes == {(32, 32), (64, 64), (96, 96)}  # 64 +- 32, multiples of 32
    assert trainer._multiscale_size(1, 3) == trainer._multiscale_size(1, 7)  # fixed within a block of 10
    assert trainer._multiscale_size(2, 0) is None  # no-aug tail trains at the loader's size
    batch = next(iter(trainer.train_loader))
    epoch, i = next((e, i) for e in range(2) for i in range(0, 200, 10) if trainer._multiscale_size(e, i) == (96, 96))
    images, targets = trainer._prepare_batch(batch, epoch, i)
    assert images.shape[-2:] == (96, 96) and images.dtype == torch.float32
    before = batch["targets"]
    assert before.mask.any() and torch.equal(targets.mask, before.mask)
    assert torch.allclose(targets.boxes, before.boxes * 1.5) and torch.equal(targets.labels, before.labels)
    # a custom collate's packed (B, M, 5) targets + target_mask (deprecated): read with the mask, the same record
    packed = {**batch, "targets": before.to_packed(), "target_mask": before.mask}
    with pytest.warns(DeprecationWarning):
        _, old_style = trainer._prepare_batch(packed, epoch, i)
    assert old_style.equal(targets)


def test_init_weights_from_timm_and_yolox_files(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    state = timm.create_model("cspresnet50", pretrained=False).state_dict()
    path = tmp_path / "cspresnet50_timm.pth"
    torch.save(state, path)
    raw = {"model": {"name": "cspresnet50", "num_classes": 2, "depth": 0.33, "width": 0.125,
                     "weights": str(path)}}
    mcfg = config_from_dict(raw).model
    detector = build_detector(mcfg)
    assert "timm weights" in init_weights(detector, mcfg)
    own = detector.backbone.state_dict()
    assert torch.equal(own["stem.conv.conv.weight"], state["stem.conv1.conv.weight"])
    assert torch.equal(own["stages.3.fuse.bn.running_var"], state["stages.3.conv_transition.bn.running_var"])
    # timm weights of another architecture: clear error, not a traceback from load_state_dict
    raw["model"]["name"] = "cspdarknet53"
    with pytest.raises(CheckpointError, match="timm weights do not fit"):
        init_weights(build_detector(config_from_dict(raw).model), config_from_dict(raw).model)
    # a YOLOX-style checkpoint is recognised and routed to load_yolox_weights
    yolox = tmp_path / "yolox_s.pth"
    torch.save({"model": {"backbone.backbone.stem.conv.conv.weight": torch.zeros(8, 12, 3, 3)}, "start_epoch": 300},
               yolox)
    raw = {"model": {"name": "cspdarknet_s", "num_classes": 80, "width": 0.125, "weights": str(yolox)}}
    with pytest.raises(CheckpointError, match="YOLOX weights do not fit"):
        init_weights(build_detector(config_from_dict(raw).model), config_from_dict(raw).model)


def test_init_weights_from_yolox_checkpoint(shapes, tmp_path):
    """A YOLOX-layout checkpoint ({"model": state_dict, "start_epoch", ...}, BGR stem) given as model.weights
    initialises the whole detector, EMA included; a wrong class count is a clear error."""
    raw = tiny_raw(shapes, tmp_path, epochs=1, no_aug_epochs=0)
    source = build_detector(config_from_dict(raw).model)
    torch.manual_seed(3)
    with torch.no_grad():  # non-trivial values everywhere, BN statistics included
        for key, value in source.state_dict().items():
            if value.dtype.is_floating_point:
                value.copy_(torch.rand_like(value) + 0.5 if "running_var" in key else torch.randn_like(value) * 0.1)
    yolox_state = cspdet_to_yolox_state_dict(source.state_dict())
    assert all(k.startswith(("backbone.", "head.")) for k in yolox_state)
    assert len(yolox_state) > len(source.state_dict())  # each CSP expand conv became conv1 + conv2
    path = tmp_path / "yolox_tiny.pth"
    torch.save({"model": yolox_state, "start_epoch": 300, "amp": None}, path)
    assert detect_weights_format(torch.load(path, weights_only=True)) == "yolox"

    raw["model"]["weights"] = str(path)
    trainer = Trainer(config_from_dict(raw), run_dir=tmp_path / "yolox", progress=False)
    assert _max_diff(trainer.model.state_dict(), source.state_dict()) == 0.0
    assert _max_diff(trainer.ema.ema.state_dict(), source.state_dict()) == 0.0  # EMA starts from the weights
    x = torch.rand(1, 3, 64, 64) * 255
    assert torch.equal(trainer.model.eval()(x), source.eval()(x))
    # another class count (fine-tuning on new classes): all but the class layers load, each one named
    raw["model"]["num_classes"] = 80
    report = init_weights(build_detector(config_from_dict(raw).model), config_from_dict(raw).model)
    assert "6 class-dependent head tensors re-initialised" in report and "head.levels.2.cls_pred.bias" in report
    # ... but not where the weights' own class layers are needed (evaluation)
    with pytest.raises(CheckpointError, match=r"(?s)YOLOX weights do not fit.*number of classes differs"):
        init_weights(build_detector(config_from_dict(raw).model), config_from_dict(raw).model,
                     allow_class_change=False)


def test_resume_keeps_a_newer_better_best_checkpoint(tmp_path):
    """best.pt written after last.pt (kill between the saves, or save_interval > 1) sets the bar on resume."""
    from types import SimpleNamespace

    from cspdet.runtime.checkpoint import save_checkpoint
    from cspdet.engine.run import TrainingRun

    save_checkpoint({"format": "cspdet", "kind": "detector", "best_ap": 0.42, "epoch": 7}, tmp_path / "best.pt")
    run = SimpleNamespace(resume_path=str(tmp_path / "last.pt"), best_epoch=5)
    assert TrainingRun._best_score(run, {"best_ap": 0.50}, "best_ap") == 0.50 and run.best_epoch == 5
    assert TrainingRun._best_score(run, {"best_ap": 0.30}, "best_ap") == 0.42
    assert run.best_epoch == 7  # early stopping counts from best.pt's epoch
    (tmp_path / "best.pt").write_bytes(b"garbage")
    assert TrainingRun._best_score(run, {"best_ap": 0.30}, "best_ap") == 0.30
