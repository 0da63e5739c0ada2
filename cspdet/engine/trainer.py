"""Detection training: what the detection task plugs into the one training loop of
:class:`cspdet.engine.run.TrainingRun` (which can be stopped and resumed exactly).

One epoch = one pass of the train loader. Per iteration: (multi-scale resize) -> forward under autocast ->
NaN/Inf guard (:meth:`Trainer.train_step`, this module) -> backward (accumulated to the nominal batch) ->
optimizer step with clipping -> EMA update, with the learning rate set from a pure function of the global
iteration (the loop, :mod:`cspdet.engine.loop`). Each epoch starts with :meth:`Trainer.on_epoch_begin` (the
no-augmentation tail, the head's epoch schedule, frozen BatchNorm). At the end of an epoch: an
evaluation of the EMA weights every ``eval_interval`` epochs (and after the last), a row in ``results.csv``
and a line on the console, early stopping (``train.patience``), and ``last.pt`` / ``best.pt`` written
atomically. Logging and anything else that watches the run are callbacks (:mod:`cspdet.engine.callbacks`).

Exact resume: ``last.pt`` holds everything the next epoch depends on -- raw and EMA weights, optimizer,
GradScaler, schedule, epoch, iteration, and every process's Python/NumPy/torch(/CUDA) RNG states. The data
loader reseeds from ``(train.seed, epoch)`` through ``set_epoch``, and the multi-scale size is a function of
``(seed, epoch, iteration)``, so 2 epochs in one go and 1 + resume 1 give the same weights.

Distributed: under ``torchrun`` the model is wrapped in ``DistributedDataParallel``; every rank runs the same
sequence of collectives (loss all-reduce each iteration, gathered predictions at evaluation) and only rank 0
writes files, logs or shows progress.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, ConfigError, config_from_dict, config_to_dict
from ..det.targets import Targets, as_targets
from ..models.contracts import HeadEvalDefaults
from .build import build_detector, load_initial_weights
from .callbacks import EpochStats, format_epochs
from .ema import ModelEMA, unwrap_model
from .freeze import freeze_modules, keep_frozen_in_eval, resolve_freeze
from .optim import (
    DEFAULT_SCHEDULE,
    ScheduleRequest,
    build_optimizer,
    build_schedule,
    check_schedule,
    resolve_optimizer,
    scaled_schedule_epochs,
    with_scaled_schedule,
)
from .resources import plan_workers
from .run import (
    EpochMeter,
    NonFiniteLossError,
    ResumeError,
    RunFinished,
    TrainingRun,
    all_reduce_finite,
    seed_everything,
)

__all__ = ["Trainer", "config_from_checkpoint"]

# Config keys that may differ on resume without changing the trained weights.
RESUME_SAFE_KEYS = frozenset({
    "data.workers", "data.cache", "data.strict", "train.device", "train.log_images", "train.save_interval",
    "train.exist_ok", "train.threads", "train.patience", "eval.batch_size", "eval.backend",
})


# --------------------------------------------------------------------------------------------- trainer


class Trainer(TrainingRun):
    """Trains a detector from a :class:`~cspdet.config.Config`.

    Args:
        cfg: resolved config.
        resume: a ``last.pt`` (or run directory) to continue from. The run keeps its directory. The config
            must match the one stored in the checkpoint except for :data:`RESUME_SAFE_KEYS`.
        run_dir: explicit output directory (default: ``train.output_dir/train.name``, suffixed ``-2``, ``-3``,
            ... when it already holds a run). Only one process at a time may write a run directory.
        progress: tqdm bars for each epoch, evaluation and cache warm-up (rank 0 only). The run header and
            one line per epoch are printed either way.

    ``trainer.callbacks`` (:mod:`cspdet.engine.callbacks`) may be extended before ``fit()``.

    Example::

        cfg = load_config("configs/demo.yaml", ["train.epochs=5"])
        summary = Trainer(cfg).fit()   # {"epoch": 5, "best_ap": ..., "run_dir": ...}
    """

    kind = "detector"
    sections = ("model", "data", "train", "eval")
    summary_metrics = ("AP", "AP50")
    score_key = score_name = "AP"
    best_key = "best_ap"

    def __init__(
        self,
        cfg: Config,
        resume: str | os.PathLike | None = None,
        run_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ):
        self.cfg = cfg
        tcfg = cfg.train
        self._setup_process(tcfg.device)
        check_schedule(tcfg.schedule)  # a misspelt name fails before any data are read
        self.workers = plan_workers(self.device.type, cfg.data.workers)
        self._setup_threads(tcfg.threads, self.workers)
        self.progress = progress
        self.total_epochs, self.eval_interval, self.patience = tcfg.epochs, tcfg.eval_interval, tcfg.patience or 0
        self.grad_clip, self.save_interval = tcfg.grad_clip, tcfg.save_interval

        resume_ckpt = self._load_resume(resume) if resume is not None else None
        if tcfg.batch_size % self.world_size:
            raise ConfigError(
                f"train.batch_size: {tcfg.batch_size} is not divisible by the {self.world_size} processes"
            )
        self.batch_per_rank = tcfg.batch_size // self.world_size
        nominal = tcfg.nominal_batch_size or tcfg.batch_size
        self.accumulate = max(1, round(nominal / tcfg.batch_size))
        seed_everything(tcfg.seed + self.rank)

        self._setup_run_dir(resume_ckpt is not None, run_dir, tcfg.output_dir, tcfg.name, tcfg.exist_ok)

        # ---- data
        from ..data import build_dataset, build_train_loader, build_val_loader

        dcfg = cfg.data
        self.train_set = build_dataset(dcfg.dataset, "train", strict=dcfg.strict, cache=dcfg.cache)
        self.val_set = build_dataset(dcfg.dataset, cfg.eval.split, strict=dcfg.strict, cache=dcfg.cache)
        if len(self.train_set.class_names) != cfg.model.num_classes:
            raise ConfigError(
                f"model.num_classes: {cfg.model.num_classes} but dataset {dcfg.dataset} has "
                f"{len(self.train_set.class_names)} classes; set model.num_classes={len(self.train_set.class_names)}"
            )
        if tcfg.batch_size > len(self.train_set):
            # one short batch per epoch would be a different recipe than the one asked for (lr, BN statistics)
            raise ConfigError(f"train.batch_size: {tcfg.batch_size} is larger than the {len(self.train_set)} training "
                              f"images of {dcfg.dataset}; use at most {len(self.train_set)}")
        self.cache_note = None
        if dcfg.cache:  # refuse a cache that would not fit in RAM before decoding a single image
            from ..data.loader import check_cache_memory

            self.cache_note = check_cache_memory(self.train_set, self.val_set, tuple(dcfg.img_size),
                                                 processes=int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
            self._log(f"data.cache: {self.cache_note}")
        bars = self.progress and self.is_main
        self.train_loader = build_train_loader(
            self.train_set, dcfg, batch_size=self.batch_per_rank, seed=tcfg.seed, rank=self.rank,
            world_size=self.world_size, workers=self.workers, progress=bars,
        )
        self.val_loader = build_val_loader(
            self.val_set, tuple(cfg.eval.img_size), cfg.eval.batch_size, self.workers, rank=self.rank,
            world_size=self.world_size, progress=bars,
        )
        self.iters_per_epoch = len(self.train_loader)

        # ---- model, optimizer, schedule, EMA, AMP
        model = build_detector(cfg.model)
        # meta.source of every checkpoint this run writes: the initial weights' file, format, hash and licence
        # (cspdet/engine/provenance.py); a resumed run keeps the record its checkpoint holds.
        self.weights_source = self._initial_weights(model, resume_ckpt)
        # train.freeze (fine-tuning): before the optimizer is built, which then never sees the frozen parameters.
        self.frozen = resolve_freeze(model, tcfg.freeze)
        self.frozen_params = freeze_modules(model, self.frozen)
        if tcfg.sync_bn and self.world_size > 1:
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                self._log("train.sync_bn: SyncBatchNorm needs CUDA; using per-process BatchNorm on CPU")
        model.to(self.device)
        self.model = model
        # The losses logged (results.csv columns, progress bar) are the head's: each head kind owns its loss.
        self.loss_keys: tuple[str, ...] = tuple(model.head.loss_keys)
        self.optimizer_choice = resolve_optimizer(
            tcfg.optimizer, num_images=len(self.train_set), batch_size=tcfg.batch_size, accumulate=self.accumulate,
            epochs=tcfg.epochs, num_classes=cfg.model.num_classes, lr_per_image=tcfg.lr_per_image)
        self.base_lr = self.optimizer_choice.base_lr
        self.optimizer = build_optimizer(
            model, self.optimizer_choice.name, lr=self.base_lr, momentum=tcfg.momentum,
            weight_decay=tcfg.weight_decay, nesterov=tcfg.nesterov,
        )
        self.warmup_epochs, self.no_aug_epochs = scaled_schedule_epochs(tcfg.epochs, tcfg.warmup_epochs,
                                                                        tcfg.no_aug_epochs)
        self.no_aug_start = max(0, tcfg.epochs - self.no_aug_epochs)
        self._no_aug_started = False  # mosaic / mixup closed (once per process; see _start_no_aug)
        self.schedule = build_schedule(tcfg.schedule, ScheduleRequest(
            base_lr=self.base_lr, epochs=tcfg.epochs, iters_per_epoch=self.iters_per_epoch,
            warmup_epochs=self.warmup_epochs, no_aug_epochs=self.no_aug_epochs, warmup_lr=tcfg.warmup_lr,
            min_lr_ratio=tcfg.min_lr_ratio,
        ))
        # the EMA leaves frozen tensors as they are (exactly the source's, in every checkpoint)
        fixed = [k for k in model.state_dict() if any(k.startswith(f"{name}.") for name in self.frozen)]
        self.ema = ModelEMA(model, tcfg.ema_decay, fixed=fixed) if tcfg.ema else None
        self._setup_amp(tcfg.amp, tcfg.bf16)

        self.start_epoch = 0
        self.iteration = 0  # optimizer-independent count of training iterations done
        self.best_score = -1.0
        self.rng_state: dict[str, Any] | None = None
        if resume_ckpt is not None:
            self._restore(resume_ckpt)
            if self.ema is not None:  # restoring may start a new average (a run that had EMA off)
                self.ema.fixed = frozenset(fixed)
        self._wrap_ddp()

        self.evaluator = None
        # Every run trims results.csv to the epochs its checkpoint covers (none for a new run), so rows of
        # a killed or earlier run in the same directory never mix with this one's.
        self._open_outputs(cfg, resuming=resume_ckpt is not None, trim_results=True, exist_ok=tcfg.exist_ok)
        from .plots import TrainingPlots, ValImagesLogger  # matplotlib: imported only by a detection run

        # after the results.csv logger (results.png reads its rows); validation pictures to TensorBoard
        self.callbacks += [TrainingPlots(), ValImagesLogger()]

    @property
    def best_ap(self) -> float:
        """The best AP so far (:attr:`best_score`); -1 before the first evaluation."""
        return self.best_score

    @best_ap.setter
    def best_ap(self, value: float) -> None:
        self.best_score = value

    def _initial_weights(self, model: nn.Module, resume_ckpt: dict[str, Any] | None) -> dict[str, Any]:
        """Load ``model.weights`` into a new run's model (logging what was loaded and what was not); returns the
        ``meta.source`` record without ``trained_in``."""
        from .provenance import weights_source

        if resume_ckpt is not None:
            meta = resume_ckpt.get("meta") if isinstance(resume_ckpt.get("meta"), dict) else {}
            source = meta.get("source")
            if isinstance(source, dict):
                return {k: v for k, v in source.items() if k != "trained_in"}
            return {"path": None, "format": "unknown", "sha256": None, "licence": None, "note": source}
        if not self.cfg.model.weights:
            return weights_source(None, "scratch")
        loaded = load_initial_weights(model, self.cfg.model)
        self._log(loaded.report)
        return loaded.source

    # ---------------------------------------------------------------------------------------- resume

    def _load_resume(self, resume: str | os.PathLike) -> dict[str, Any]:
        ckpt = self._open_resume_checkpoint(resume, self.cfg.train.output_dir)
        path = self.resume_path
        self._check_resume_config(
            _comparable(ckpt["config"]), _comparable(config_to_dict(self.cfg)), RESUME_SAFE_KEYS,
            "Resume with the run's own config (omit CONFIG and overrides), or start a new run with "
            f"model.weights={path}",
        )
        epochs = self.cfg.train.epochs
        if int(ckpt["epoch"]) >= epochs:
            raise RunFinished(
                f"--resume: run {path.parent} already finished all {epochs} epochs (best AP "
                f"{float(ckpt.get('best_ap', -1)):.4f}); nothing to do. To train further start a new run with "
                f"model.weights={path}"
            )
        trainer_state = ckpt["trainer"]
        if trainer_state.get("stop_reason"):
            waited = int(ckpt["epoch"]) - int(trainer_state.get("best_epoch", 0))
            patience = self.cfg.train.patience
            if not trainer_state["stop_reason"].startswith("early stop") or (patience and waited >= patience):
                raise RunFinished(
                    f"--resume: run {path.parent} ended after epoch {ckpt['epoch']} ({trainer_state['stop_reason']}); "
                    "nothing to do. To continue it, resume with a larger train.patience (or train.patience=0)"
                )
        if int(trainer_state.get("world_size", 1)) != self.dist.world_size:
            self._log(
                f"resume: run used {trainer_state.get('world_size')} processes, now {self.dist.world_size}; "
                "RNG streams are re-derived, so the continuation is not bit-identical"
            )
        return ckpt

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self._restore_training_state(ckpt, self.cfg.train.ema_decay)
        saved_schedule = ckpt["trainer"].get("schedule")
        if saved_schedule is not None and saved_schedule != self.schedule.state_dict():
            self._log(
                f"resume: learning-rate schedule changed (saved {saved_schedule}, now {self.schedule.state_dict()}); "
                "following the new one"
            )
        self.best_score = self._best_score(ckpt, self.best_key)
        self.stop_reason = None  # _load_resume refused a run whose stop still holds
        self._log(f"resumed {self.resume_path} at epoch {self.start_epoch} (iteration {self.iteration})")

    # -------------------------------------------------------------------------------------- training

    def _start_no_aug(self, epoch: int) -> None:
        # Called at every tail epoch (a resumed run may start inside the tail); it only acts once per process.
        if self._no_aug_started:
            return
        self._no_aug_started = True
        loader_set = self.train_loader.dataset
        if hasattr(loader_set, "close_mosaic"):
            loader_set.close_mosaic()
        self._log(f"epoch {epoch + 1}: no-augmentation tail (mosaic/mixup off; the head follows its own schedule, "
                  "e.g. YOLOX's L1 loss on)")

    def on_epoch_begin(self, epoch: int) -> None:
        tcfg = self.cfg.train
        phase = "no_aug" if epoch >= self.no_aug_start else "train"
        if phase == "no_aug":
            self._start_no_aug(epoch)
        # The head follows its own schedule (YOLOX: L1 loss in the no-aug tail; the task-aligned head: weight from
        # its one-to-many to its one-to-one branch): a pure function of the epoch, so a resumed run continues
        # exactly. The EMA copy follows too, so both heads are always in the same state.
        unwrap_model(self.model).head.set_epoch(epoch, tcfg.epochs, phase)
        if self.ema is not None:
            self.ema.ema.head.set_epoch(epoch, tcfg.epochs, phase)
        keep_frozen_in_eval(unwrap_model(self.model), self.frozen)  # frozen BN keeps its statistics

    def new_meter(self) -> EpochMeter:
        return EpochMeter(self.loss_keys)  # the head's losses

    def train_step(self, batch: dict[str, torch.Tensor], epoch: int, i: int
                   ) -> tuple[torch.Tensor, dict[str, float], int]:
        """(Multi-scale resize,) forward under autocast, the head's losses averaged over ranks."""
        images, targets = self._prepare_batch(batch, epoch, i)
        with self.autocast:
            out = self.model(images, targets)
        values = self._check_losses(out, batch, epoch, i)
        return out["loss"], dict(zip(self.loss_keys, values)), images.shape[0]

    def _prepare_batch(self, batch: dict[str, Any], epoch: int, i: int) -> tuple[torch.Tensor, Targets]:
        """(float images (B, 3, H, W), :class:`~cspdet.det.targets.Targets`) on the device, at this step's
        multi-scale size."""
        images = batch["images"].to(self.device, non_blocking=True).float()
        targets = batch["targets"]
        if not isinstance(targets, Targets):  # a custom collate's packed (B, M, 5) tensor (deprecated) + its mask
            targets = as_targets(targets, batch.get("target_mask"), caller="a training batch")
        targets = targets.to(self.device, non_blocking=True)
        size = self._multiscale_size(epoch, i)
        if size is not None and tuple(images.shape[-2:]) != size:
            sy, sx = size[0] / images.shape[-2], size[1] / images.shape[-1]
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            targets = targets.scaled(sx, sy)
        return images, targets

    def _multiscale_size(self, epoch: int, i: int) -> tuple[int, int] | None:
        """YOLOX-style random input size, changed every 10 iterations; ``None`` = keep the loader's size.

        Drawn from a generator seeded by (seed, epoch, block of iterations) so every rank picks the same size
        without a broadcast and a resumed run picks the sizes the uninterrupted run would have. Unlike YOLOX,
        the final no-augmentation epochs train at the fixed ``data.img_size``: they exist to fit the
        un-augmented distribution the model is evaluated on, and evaluation runs at one size.
        """
        r = self.cfg.data.multiscale_range
        if r <= 0 or epoch >= self.no_aug_start:
            return None
        h, w = self.cfg.data.img_size
        gen = torch.Generator().manual_seed(hash((self.cfg.train.seed, epoch, i // 10)) & 0x7FFFFFFF)
        factor = int(torch.randint(-r, r + 1, (1,), generator=gen))
        base = h // 32 + factor
        return base * 32, max(int(w / h * base), 1) * 32

    def _check_losses(self, out: dict[str, torch.Tensor], batch: dict, epoch: int, i: int) -> list[float]:
        """Loss values averaged over ranks; raises :class:`NonFiniteLossError` on every rank if any is NaN/Inf."""
        local = torch.stack([out[k].detach().float().reshape(()) if k in out else torch.zeros((), device=self.device)
                             for k in self.loss_keys])
        total, bad_counts = all_reduce_finite(local)
        if bool(bad_counts.any()):
            terms = [k for k, flag in zip(self.loss_keys, bad_counts.tolist()) if flag and k != "loss"] or ["loss"]
            where = f"epoch {epoch + 1}, iteration {i + 1}/{self.iters_per_epoch}"
            if not bool(torch.isfinite(local).all()):  # this rank diverged: name the batch
                ids = batch["image_ids"].tolist() if "image_ids" in batch else "?"
                detail = ", ".join(f"{k}={v}" for k, v in zip(self.loss_keys, local.tolist()))
                msg = (f"loss became non-finite at {where} in term(s) {', '.join(terms)} ({detail}); "
                       f"batch image ids {ids}")
            else:
                msg = f"loss became non-finite at {where} in term(s) {', '.join(terms)} on another process"
            raise NonFiniteLossError(
                msg + ". Stopped instead of training on garbage: lower train.lr_per_image, set train.grad_clip, "
                "or check these images' labels"
            )
        return (total / self.world_size).tolist()

    # ------------------------------------------------------------------------------------ evaluation

    def evaluate(self, epoch: int, outputs: bool | None = None) -> dict[str, float]:
        """COCO box stats of the EMA model on the val set (keys AP, AP50, ...). Every rank must call this:
        each predicts its shard, rank 0 scores, and all ranks get the same numbers back. ``outputs`` (default:
        after the last epoch): also write metrics.json, detections.json and PR curves to ``RUN_DIR/eval``."""
        if self.evaluator is None:
            from .evaluator import COCOEvaluator

            ecfg = self.cfg.eval
            self.evaluator = COCOEvaluator(self.val_loader, conf=ecfg.conf, iou=ecfg.iou, max_det=ecfg.max_det,
                                           backend=ecfg.backend, nms_free=ecfg.nms_free,
                                           multi_label=ecfg.multi_label, callbacks=self.callbacks)  # on_val_end too
        if outputs is None:
            outputs = epoch + 1 == self.cfg.train.epochs
        result = self.evaluator.evaluate(self.eval_model(), output_dir=self.run_dir / "eval" if outputs else None,
                                         plots=outputs, progress=self.progress and self.is_main)
        return {k: float(v) for k, v in result.stats.items()}

    # ------------------------------------------------------------------------------------ persistence

    def results_row(self, stats: EpochStats) -> tuple[list[str], list[Any]]:
        header = ["epoch", "lr", *(f"train/{k}" for k in self.loss_keys), "AP", "AP50", "AP75", "APs", "APm", "APl",
                  "time_s"]
        row = [stats.epoch + 1, f"{stats.lr:.6g}", *(f"{stats.losses[k]:.5f}" for k in self.loss_keys)]
        row += [f"{stats.metrics[k]:.5f}" if k in stats.metrics else "" for k in header[2 + len(self.loss_keys):-1]]
        row.append(f"{stats.seconds:.1f}")
        return header, row

    def _header_lines(self) -> list[str]:
        from ..models.info import model_info

        tcfg, dcfg = self.cfg.train, self.cfg.data
        info = model_info(unwrap_model(self.model), tuple(dcfg.img_size))
        size = "x".join(map(str, dcfg.img_size))
        workers = self.workers
        workers_note = " (auto: none on a CPU; set data.workers to choose)" if dcfg.workers is None and not workers else ""
        model = f"model     {self.cfg.model.name}: {info['params_m']:.2f} M parameters, {info['gflops']:.2f} GFLOPs"
        data = (f"data      {dcfg.dataset}: {len(self.train_set)} train / {len(self.val_set)} {self.cfg.eval.split} "
                f"images, {len(self.train_set.class_names)} classes; batch {tcfg.batch_size} = {self.iters_per_epoch} "
                f"iterations per epoch; {workers} loader worker{'s' if workers != 1 else ''}{workers_note}")
        lines = [f"{model} at {size}", data]
        if self.cache_note:
            lines.append(f"cache     {self.cache_note}")
        auto = [k for k in ("warmup_epochs", "no_aug_epochs") if getattr(tcfg, k) is None]
        notes = (f" ({' and '.join(f'train.{k}' for k in auto)} scaled to {tcfg.epochs} epochs: a tenth of the run, "
                 "at most 5 / 15 as YOLOX at 300)") if auto else ""
        if self.warmup_epochs + self.no_aug_epochs >= tcfg.epochs:  # only when set by hand: the rule keeps 80 %
            notes += " (warm-up and tail fill the whole run: the lr never follows its cosine)"
        evals = (f"every {format_epochs(tcfg.eval_interval, 'epoch')} and after the last" if tcfg.eval_interval
                 else "after the last epoch")
        stopping = (f"early stop after {format_epochs(self.patience)} without AP gain" if self.patience
                    else "no early stopping")
        optimizer = (self.optimizer_choice.reason if tcfg.optimizer == "auto"
                     else f"{tcfg.optimizer} lr {self.base_lr:.3g}")
        if tcfg.schedule != DEFAULT_SCHEDULE:
            optimizer += f" ({tcfg.schedule} schedule)"
        src = self.weights_source
        if src.get("path"):
            lines.append(f"weights   {src['path']} ({src['format']}; licence of the weights: {src['licence']})")
        if self.frozen:
            lines.append(f"freeze    {', '.join(self.frozen)}: {self.frozen_params:,} parameters fixed, their "
                         "BatchNorm statistics too (eval mode)")
        lines.append(f"schedule  {format_epochs(tcfg.epochs)}, {optimizer}, warm-up "
                     f"{format_epochs(self.warmup_epochs)}, no-aug tail {format_epochs(self.no_aug_epochs)}{notes}; "
                     f"evaluate {evals}; {stopping}")
        return lines

    def _checkpoint_meta(self) -> dict[str, Any]:
        from ..models import DetectorMeta

        model = unwrap_model(self.model)
        meta = DetectorMeta(
            class_names=list(self.train_set.class_names), category_ids=list(self.train_set.category_ids),
            img_size=tuple(self.cfg.eval.img_size), train_img_size=tuple(self.cfg.data.img_size),
            strides=model.strides, preset=self.cfg.model.name,
            source={**self.weights_source, "trained_in": str(self.run_dir)},
            dataset=self.cfg.data.dataset, dataset_path=_absolute(self.cfg.data.dataset),
        )
        return {"spec": model.spec.to_dict(), "meta": meta.to_dict(), self.best_key: float(self.best_score)}


def _comparable(raw: dict[str, Any]) -> dict[str, Any]:
    """A stored or current config as a resume compares it: the schedule as the run uses it
    (:func:`~cspdet.engine.optim.with_scaled_schedule`), and ``eval.conf / iou / max_det`` left to the head (null)
    as the values runs saved before that default wrote out (every built-in head's: :class:`HeadEvalDefaults`)."""
    raw = with_scaled_schedule(raw)
    defaults = HeadEvalDefaults()
    evaluation = dict(raw.get("eval") or {})
    for key in ("conf", "iou", "max_det"):
        if evaluation.get(key, None) is None:
            evaluation[key] = getattr(defaults, key)
    return {**raw, "eval": evaluation}


def _absolute(path: str | None) -> str | None:
    """``path`` made absolute (where a relative dataset path really was when the checkpoint was saved)."""
    return os.path.abspath(path) if path else None


def config_from_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> Config:
    """The resolved config stored in a checkpoint (used by ``--resume`` without a CONFIG)."""
    try:
        return config_from_dict(ckpt["config"], source=f"in the config stored in {path}")
    except (KeyError, ConfigError) as err:
        raise ResumeError(f"{path}: stored config is unusable: {err}") from None
