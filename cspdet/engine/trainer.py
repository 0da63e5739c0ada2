"""Detection training: the YOLOX recipe in one loop that can be stopped and resumed exactly.

One epoch = one pass of the train loader. Per iteration: (multi-scale resize) -> forward under autocast ->
NaN/Inf guard -> backward (accumulated to the nominal batch) -> optimizer step with clipping -> EMA update,
with the learning rate set from a pure function of the global iteration. At the end of an epoch: a row in
``results.csv``, an evaluation of the EMA weights every ``eval_interval`` epochs (and after the last), and
``last.pt`` / ``best.pt`` written atomically.

Exact resume: ``last.pt`` holds everything the next epoch depends on -- raw and EMA weights, optimizer,
GradScaler, schedule, epoch, iteration, and every process's Python/NumPy/torch(/CUDA) RNG states. The data
loader reseeds from ``(train.seed, epoch)`` through ``set_epoch``, and the multi-scale size is a function of
``(seed, epoch, iteration)``, so 2 epochs in one go and 1 + resume 1 give the same weights.

Distributed: under ``torchrun`` the model is wrapped in ``DistributedDataParallel``; every rank runs the same
sequence of collectives (loss all-reduce each iteration, gathered predictions at evaluation) and only rank 0
writes files, logs or shows progress.
"""

from __future__ import annotations

import contextlib
import csv
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, ConfigError, config_from_dict, config_to_dict, save_config
from .build import build_detector, init_weights
from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from .distributed import (
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
    select_device,
)
from .ema import ModelEMA, unwrap_model
from .optim import YoloxSchedule, build_optimizer, set_lr

__all__ = [
    "LOSS_KEYS",
    "NonFiniteLossError",
    "ResumeError",
    "RunFinished",
    "Trainer",
    "capture_rng_state",
    "config_from_checkpoint",
    "find_resume_checkpoint",
    "restore_rng_state",
    "seed_everything",
]

LOSS_KEYS = ("loss", "iou_loss", "obj_loss", "cls_loss", "l1_loss")
CHECKPOINT_VERSION = 1
# Config keys that may differ on resume without changing the trained weights.
RESUME_SAFE_KEYS = frozenset({
    "data.workers", "data.cache", "data.strict", "train.device", "train.log_images", "train.save_interval",
    "train.exist_ok", "eval.batch_size", "eval.backend",
})


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf; the message names the epoch, iteration, batch and loss term."""


class ResumeError(RuntimeError):
    """A run cannot be resumed (no checkpoint, wrong kind of file, or a changed config)."""


class RunFinished(RuntimeError):
    """``--resume`` of a run that already trained all its epochs."""


# ------------------------------------------------------------------------------------------------- RNG


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) RNG states as ``weights_only``-loadable plain data."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"]).astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state({
        "bit_generator": np_state["bit_generator"],
        "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
        "has_gauss": np_state["has_gauss"],
        "gauss": np_state["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return [_to_plain(o) for o in obj]
    return obj


# ---------------------------------------------------------------------------------------------- resume


def find_resume_checkpoint(resume: str | os.PathLike | bool, output_dir: str | os.PathLike) -> Path:
    """Resolve ``--resume``: a ``last.pt`` file, a run directory, or ``True`` for the newest run's ``last.pt``."""
    if resume is True or resume == "":
        candidates = sorted(Path(output_dir).glob("*/last.pt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise ResumeError(f"--resume: no run with a last.pt under {output_dir}; give the checkpoint path")
        return candidates[-1]
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise ResumeError(f"--resume: {path} not found")
    return path


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    diffs = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append((f"{section}.{key}", a.get(key), b.get(key)))
    return diffs


# --------------------------------------------------------------------------------------------- trainer


class Trainer:
    """Trains a detector from a :class:`~cspdet.config.Config`.

    Args:
        cfg: resolved config.
        resume: a ``last.pt`` (or run directory) to continue from. The run keeps its directory. The config
            must match the one stored in the checkpoint except for :data:`RESUME_SAFE_KEYS`.
        run_dir: explicit output directory (default: ``train.output_dir/train.name``, suffixed ``2``, ``3``,
            ... when it already holds a run).
        progress: show a tqdm bar per epoch (rank 0 only).

    Example::

        cfg = load_config("configs/demo.yaml", ["train.epochs=5"])
        summary = Trainer(cfg).fit()   # {"epoch": 5, "best_ap": ..., "run_dir": ...}
    """

    def __init__(
        self,
        cfg: Config,
        resume: str | os.PathLike | None = None,
        run_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ):
        self.cfg = cfg
        tcfg = cfg.train
        self.dist = init_distributed(tcfg.device)
        self.rank, self.world_size = self.dist.rank, self.dist.world_size
        self.is_main = self.rank == 0
        self.device = select_device(tcfg.device, self.dist.local_rank)
        self.progress = progress

        resume_ckpt = self._load_resume(resume) if resume is not None else None
        if tcfg.batch_size % self.world_size:
            raise ConfigError(
                f"train.batch_size: {tcfg.batch_size} is not divisible by the {self.world_size} processes"
            )
        self.batch_per_rank = tcfg.batch_size // self.world_size
        nominal = tcfg.nominal_batch_size or tcfg.batch_size
        self.accumulate = max(1, round(nominal / tcfg.batch_size))
        self.base_lr = tcfg.lr_per_image * tcfg.batch_size * self.accumulate
        seed_everything(tcfg.seed + self.rank)

        # ---- run directory (rank 0 decides, everyone agrees)
        if resume_ckpt is not None:
            self.run_dir = Path(self.resume_path).parent
        elif run_dir is not None:
            self.run_dir = Path(run_dir)
        else:
            self.run_dir = Path(broadcast_object(
                _new_run_dir(tcfg.output_dir, tcfg.name, tcfg.exist_ok) if self.is_main else None))

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
        self.train_loader = build_train_loader(
            self.train_set, dcfg, batch_size=self.batch_per_rank, seed=tcfg.seed, rank=self.rank,
            world_size=self.world_size,
        )
        self.val_loader = build_val_loader(
            self.val_set, tuple(cfg.eval.img_size), cfg.eval.batch_size, dcfg.workers, rank=self.rank,
            world_size=self.world_size,
        )
        self.iters_per_epoch = len(self.train_loader)
        if self.iters_per_epoch == 0:
            raise ConfigError(
                f"train.batch_size: {tcfg.batch_size} is larger than the {len(self.train_set)} training images"
            )

        # ---- model, optimizer, schedule, EMA, AMP
        model = build_detector(cfg.model)
        if resume_ckpt is None and cfg.model.weights:
            report = init_weights(model, cfg.model)
            self._log(report)
        if tcfg.sync_bn and self.world_size > 1:
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                self._log("train.sync_bn: SyncBatchNorm needs CUDA; using per-process BatchNorm on CPU")
        model.to(self.device)
        self.model = model
        self.optimizer = build_optimizer(
            model, tcfg.optimizer, lr=self.base_lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay,
            nesterov=tcfg.nesterov,
        )
        total_iters = tcfg.epochs * self.iters_per_epoch
        self.no_aug_start = max(0, tcfg.epochs - tcfg.no_aug_epochs)
        self.schedule = YoloxSchedule(
            base_lr=self.base_lr,
            total_iters=total_iters,
            warmup_iters=tcfg.warmup_epochs * self.iters_per_epoch,
            no_aug_iters=min(tcfg.no_aug_epochs, tcfg.epochs) * self.iters_per_epoch,
            warmup_lr=tcfg.warmup_lr,
            min_lr_ratio=tcfg.min_lr_ratio,
        )
        self.ema = ModelEMA(model, tcfg.ema_decay) if tcfg.ema else None
        self.use_amp = tcfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        if self.device.type == "cuda":
            self.autocast = torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp)
        else:
            self.autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=tcfg.bf16)

        self.start_epoch = 0
        self.iteration = 0  # optimizer-independent count of training iterations done
        self.best_ap = -1.0
        self.rng_state: dict[str, Any] | None = None
        if resume_ckpt is not None:
            self._restore(resume_ckpt)
        if self.world_size > 1:
            ddp_kwargs = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
            self.model = nn.parallel.DistributedDataParallel(model, **ddp_kwargs)

        self.evaluator = None
        self.writer = None
        self.csv_path = self.run_dir / "results.csv"
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run logged after its last checkpoint.
            self.writer = SummaryWriter(str(self.run_dir), purge_step=self.iteration + 1 if resume_ckpt else None)
            self._prepare_csv()

    # ----------------------------------------------------------------------------------------- setup

    def _log(self, message: str) -> None:
        if self.is_main and message:
            print(message, flush=True)

    def _load_resume(self, resume: str | os.PathLike) -> dict[str, Any]:
        path = find_resume_checkpoint(resume, self.cfg.train.output_dir)
        self.resume_path = path
        try:
            ckpt = load_checkpoint(path, kind="detector")
        except CheckpointError as err:
            raise ResumeError(f"--resume: {err}") from None
        if "trainer" not in ckpt:
            raise ResumeError(f"--resume: {path} holds weights only (no trainer state); resume from a last.pt")
        old = ckpt["config"]
        diffs = [d for d in _config_diff(old, config_to_dict(self.cfg)) if d[0] not in RESUME_SAFE_KEYS]
        if diffs:
            shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs[:6])
            more = f" (and {len(diffs) - 6} more)" if len(diffs) > 6 else ""
            raise ResumeError(
                f"--resume: the config differs from the one {path} was trained with: {shown}{more}. "
                "Resume with the run's own config (omit CONFIG and overrides), or start a new run with "
                f"model.weights={path}"
            )
        epochs = self.cfg.train.epochs
        if int(ckpt["epoch"]) >= epochs:
            raise RunFinished(
                f"--resume: run {path.parent} already finished all {epochs} epochs (best AP "
                f"{float(ckpt.get('best_ap', -1)):.4f}); nothing to do. To train further start a new run with "
                f"model.weights={path}"
            )
        trainer_state = ckpt["trainer"]
        if int(trainer_state.get("world_size", 1)) != self.dist.world_size:
            self._log(
                f"resume: run used {trainer_state.get('world_size')} processes, now {self.dist.world_size}; "
                "RNG streams are re-derived, so the continuation is not bit-identical"
            )
        return ckpt

    def _restore(self, ckpt: dict[str, Any]) -> None:
        state = ckpt["trainer"]
        model = unwrap_model(self.model)
        model.load_state_dict(state["model"] if "model" in state else ckpt["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if "ema_updates" in state:
                self.ema.load_state_dict({"model": ckpt["model"], "updates": state["ema_updates"]})
            else:  # the run had EMA off: start the average at the current weights
                self.ema = ModelEMA(model, self.cfg.train.ema_decay)
        saved_schedule = state.get("schedule")
        if saved_schedule is not None and saved_schedule != self.schedule.state_dict():
            self._log(
                f"resume: learning-rate schedule changed (saved {saved_schedule}, now {self.schedule.state_dict()}); "
                "following the new one"
            )
        self.start_epoch = int(ckpt["epoch"])
        self.iteration = int(state["iteration"])
        self.best_ap = float(ckpt.get("best_ap", -1.0))
        rng = state.get("rng") or []
        if len(rng) == self.world_size:
            self.rng_state = rng[self.rank]
        self._log(f"resumed {self.resume_path} at epoch {self.start_epoch} (iteration {self.iteration})")

    def _prepare_csv(self) -> None:
        # Keep only rows of epochs the checkpoint covers: a run killed after writing a row but before
        # saving would otherwise repeat that epoch.
        if not self.csv_path.is_file():
            return
        with self.csv_path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= self.start_epoch]
        with self.csv_path.open("w", newline="") as fh:
            csv.writer(fh).writerows(kept)

    # -------------------------------------------------------------------------------------- training

    def fit(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train from ``start_epoch`` to ``train.epochs`` (or only up to epoch ``stop_after``, saving
        ``last.pt`` there, to be continued with ``resume``). Returns a summary dict (rank 0's view):
        ``{"epoch": epochs done, "best_ap", "metrics": last evaluation, "run_dir"}``."""
        tcfg = self.cfg.train
        end = tcfg.epochs if stop_after is None else min(stop_after, tcfg.epochs)
        if self.rng_state is not None:
            restore_rng_state(self.rng_state)
        metrics: dict[str, float] = {}
        try:
            for epoch in range(self.start_epoch, end):
                losses, lr, seconds = self._train_epoch(epoch)
                metrics = {}
                last = epoch + 1 == tcfg.epochs
                if last or (tcfg.eval_interval > 0 and (epoch + 1) % tcfg.eval_interval == 0):
                    metrics = self.evaluate(epoch)
                    ap = metrics.get("AP", -1.0)
                    if ap > self.best_ap:
                        self.best_ap = ap
                        self._save(epoch + 1, self.run_dir / "best.pt", metrics, with_state=False)
                if self.is_main:
                    self._write_row(epoch + 1, lr, losses, metrics, seconds)
                    for key, value in metrics.items():
                        self.writer.add_scalar(f"val/{key}", value, self.iteration)
                if last or epoch + 1 == end or (epoch + 1) % max(tcfg.save_interval, 1) == 0:
                    self._save(epoch + 1, self.run_dir / "last.pt", metrics, with_state=True)
        finally:
            if self.writer is not None:
                self.writer.flush()
        if self.writer is not None:
            self.writer.close()
        return {"epoch": end, "best_ap": self.best_ap, "metrics": metrics, "run_dir": str(self.run_dir)}

    def _start_no_aug(self, epoch: int) -> None:
        loader_set = self.train_loader.dataset
        if hasattr(loader_set, "close_mosaic"):
            loader_set.close_mosaic()
        unwrap_model(self.model).head.use_l1 = True
        if self.ema is not None:
            self.ema.ema.head.use_l1 = True
        self._log(f"epoch {epoch + 1}: no-augmentation tail (mosaic/mixup off, L1 loss on)")

    def _train_epoch(self, epoch: int) -> tuple[dict[str, float], float, float]:
        tcfg = self.cfg.train
        if epoch >= self.no_aug_start:
            self._start_no_aug(epoch)
        if hasattr(self.train_loader.dataset, "set_epoch"):
            self.train_loader.dataset.set_epoch(epoch)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        self.model.train()
        sums = dict.fromkeys(LOSS_KEYS, 0.0)
        count = 0
        lr = self.schedule(self.iteration + 1)
        bar = None
        if self.is_main and self.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.iters_per_epoch, desc=f"epoch {epoch + 1}/{tcfg.epochs}", dynamic_ncols=True,
                       leave=True)
        start = time.perf_counter()
        images_seen = 0
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(self.train_loader):
            lr = self.schedule(self.iteration + 1)  # YOLOX sets the lr of the step it is about to take
            set_lr(self.optimizer, lr)
            images, targets, mask = self._prepare_batch(batch, epoch, i)
            group_start = (i // self.accumulate) * self.accumulate
            group_size = min(self.accumulate, self.iters_per_epoch - group_start)
            step_now = i + 1 == group_start + group_size
            sync = contextlib.nullcontext() if step_now or self.world_size == 1 else self.model.no_sync()
            with sync:
                with self.autocast:
                    out = self.model(images, targets, mask)
                values = self._check_losses(out, batch, epoch, i)
                self.scaler.scale(out["loss"].float() / group_size).backward()
            if step_now:
                self._optimizer_step()
            self.iteration += 1
            for key, value in zip(LOSS_KEYS, values):
                sums[key] += value
            count += 1
            images_seen += images.shape[0] * self.world_size
            if self.is_main:
                if i % 10 == 0 or i + 1 == self.iters_per_epoch:
                    for key, value in zip(LOSS_KEYS, values):
                        self.writer.add_scalar(f"train/{key}", value, self.iteration)
                    self.writer.add_scalar("train/lr", lr, self.iteration)
                if bar is not None:
                    rate = images_seen / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix_str(
                        " ".join(f"{k.replace('_loss', '')}={sums[k] / count:.3f}" for k in LOSS_KEYS)
                        + f" lr={lr:.2e} {rate:.1f}img/s",
                        refresh=False,
                    )
                    bar.update(1)
        if bar is not None:
            bar.close()
        return {k: v / max(count, 1) for k, v in sums.items()}, lr, time.perf_counter() - start

    def _prepare_batch(self, batch: dict[str, torch.Tensor], epoch: int, i: int):
        images = batch["images"].to(self.device, non_blocking=True).float()
        targets = batch["targets"].to(self.device, non_blocking=True).float()
        mask = batch["target_mask"].to(self.device, non_blocking=True)
        size = self._multiscale_size(epoch, i)
        if size is not None and tuple(images.shape[-2:]) != size:
            sy, sx = size[0] / images.shape[-2], size[1] / images.shape[-1]
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            targets = targets.clone()
            targets[..., 1::2] *= sx
            targets[..., 2::2] *= sy
        return images, targets, mask

    def _multiscale_size(self, epoch: int, i: int) -> tuple[int, int] | None:
        """YOLOX-style random input size, changed every 10 iterations; ``None`` = keep the loader's size.

        Drawn from a generator seeded by (seed, epoch, block of iterations) so every rank picks the same size
        without a broadcast and a resumed run picks the sizes the uninterrupted run would have.
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
                             for k in LOSS_KEYS])
        bad = ~torch.isfinite(local)
        packed = torch.cat([torch.nan_to_num(local, nan=0.0, posinf=0.0, neginf=0.0), bad.float()])
        total = all_reduce_sum(packed).cpu()
        n = len(LOSS_KEYS)
        if bool(total[n:].any()):
            terms = [k for k, flag in zip(LOSS_KEYS, total[n:].tolist()) if flag and k != "loss"] or ["loss"]
            where = f"epoch {epoch + 1}, iteration {i + 1}/{self.iters_per_epoch}"
            if bool(bad.any()):
                ids = batch["image_ids"].tolist() if "image_ids" in batch else "?"
                detail = ", ".join(f"{k}={v}" for k, v in zip(LOSS_KEYS, local.tolist()))
                msg = (f"loss became non-finite at {where} in term(s) {', '.join(terms)} ({detail}); "
                       f"batch image ids {ids}")
            else:
                msg = f"loss became non-finite at {where} in term(s) {', '.join(terms)} on another process"
            raise NonFiniteLossError(
                msg + ". Stopped instead of training on garbage: lower train.lr_per_image, set train.grad_clip, "
                "or check these images' labels"
            )
        return (total[:n] / self.world_size).tolist()

    def _optimizer_step(self) -> None:
        if self.cfg.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    # ------------------------------------------------------------------------------------ evaluation

    def eval_model(self) -> nn.Module:
        """The model evaluated and saved as "best": the EMA copy when EMA is on."""
        return self.ema.ema if self.ema is not None else unwrap_model(self.model)

    def evaluate(self, epoch: int) -> dict[str, float]:
        """COCO box stats of the EMA model on the val set (keys AP, AP50, ...). Every rank must call this:
        each predicts its shard, rank 0 scores, and all ranks get the same numbers back."""
        if self.evaluator is None:
            from .evaluator import COCOEvaluator

            ecfg = self.cfg.eval
            self.evaluator = COCOEvaluator(self.val_loader, conf=ecfg.conf, iou=ecfg.iou, max_det=ecfg.max_det,
                                           backend=ecfg.backend)
        last = epoch + 1 == self.cfg.train.epochs
        # The final evaluation also leaves metrics.json, detections.json and PR curves in the run directory.
        result = self.evaluator.evaluate(self.eval_model(), output_dir=self.run_dir / "eval" if last else None,
                                         plots=last)
        stats = {k: float(v) for k, v in result.stats.items()}
        if self.is_main:
            self._log(f"epoch {epoch + 1}: AP {stats['AP']:.4f}  AP50 {stats['AP50']:.4f}")
            self._log_val_images(epoch)
        return stats

    @torch.no_grad()
    def _log_val_images(self, epoch: int) -> None:
        n = min(self.cfg.train.log_images, len(self.val_set))
        if n <= 0 or self.writer is None:
            return
        from torchvision.utils import draw_bounding_boxes

        from ..data.transforms import letterbox

        model = self.eval_model()
        model.eval()
        size = tuple(self.cfg.eval.img_size)
        names = self.val_set.class_names
        for k in range(n):
            sample = self.val_set.load_sample(k)
            image, _ = letterbox(sample.image, size)
            x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
            with self.autocast:
                pred = model.predict(x[None].float().to(self.device), conf=0.25)[0]
            labels = [f"{names[int(c)]} {float(s):.2f}" for c, s in zip(pred["labels"], pred["scores"])]
            drawn = x
            if labels:  # an untrained model may find nothing: log the plain image
                drawn = draw_bounding_boxes(x, pred["boxes"].float().cpu(), labels=labels, width=1)
            self.writer.add_image(f"val_images/{k}", drawn, self.iteration)

    # ------------------------------------------------------------------------------------ persistence

    def _write_row(self, epoch: int, lr: float, losses: dict[str, float], metrics: dict[str, float], seconds: float):
        header = ["epoch", "lr", *(f"train/{k}" for k in LOSS_KEYS), "AP", "AP50", "AP75", "APs", "APm", "APl",
                  "time_s"]
        row = [epoch, f"{lr:.6g}", *(f"{losses[k]:.5f}" for k in LOSS_KEYS)]
        row += [f"{metrics[k]:.5f}" if k in metrics else "" for k in header[2 + len(LOSS_KEYS):-1]]
        row.append(f"{seconds:.1f}")
        new = not self.csv_path.is_file()
        with self.csv_path.open("a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(header)
            writer.writerow(row)

    def _save(self, epoch: int, path: Path, metrics: dict[str, float], with_state: bool) -> None:
        # Gather every rank's RNG state (a collective: all ranks call it), then rank 0 writes.
        rng = all_gather_objects(capture_rng_state()) if with_state else None
        if self.is_main:
            model = unwrap_model(self.model)
            ckpt: dict[str, Any] = {
                "format": CHECKPOINT_FORMAT,
                "kind": "detector",
                "version": CHECKPOINT_VERSION,
                "config": config_to_dict(self.cfg),
                "class_names": list(self.train_set.class_names),
                "category_ids": [int(c) for c in self.train_set.category_ids],
                "model": _cpu_state(self.eval_model()),
                "epoch": epoch,
                "best_ap": float(self.best_ap),
                "metrics": {k: float(v) for k, v in metrics.items()},
            }
            if with_state:
                state: dict[str, Any] = {
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "schedule": self.schedule.state_dict(),
                    "iteration": self.iteration,
                    "rng": rng,
                    "world_size": self.world_size,
                }
                if self.ema is not None:
                    state["model"] = _cpu_state(model)
                    state["ema_updates"] = self.ema.updates
                ckpt["trainer"] = state
            save_checkpoint(ckpt, path)
        barrier()


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


RUN_OUTPUTS = ("last.pt", "best.pt", "results.csv", "events.out.tfevents.*", "eval/*")


def _new_run_dir(output_dir: str, name: str, exist_ok: bool = False) -> str:
    """``output_dir/name``, or ``name2``, ``name3``... when that directory already holds a run.

    With ``exist_ok`` the directory is reused and the previous run's outputs (:data:`RUN_OUTPUTS`) are
    deleted, so checkpoints, results rows and TensorBoard curves of two runs never mix.
    """
    base = Path(output_dir) / name
    if exist_ok:
        for pattern in RUN_OUTPUTS:
            for old in base.glob(pattern):
                if old.is_file():
                    old.unlink()
        return str(base)
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{name}{n}")
    return str(candidate)


def config_from_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> Config:
    """The resolved config stored in a checkpoint (used by ``--resume`` without a CONFIG)."""
    try:
        return config_from_dict(ckpt["config"], source=f"in the config stored in {path}")
    except (KeyError, ConfigError) as err:
        raise ResumeError(f"{path}: stored config is unusable: {err}") from None
