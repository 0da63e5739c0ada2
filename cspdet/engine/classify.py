"""Classification pretraining of a CSPNet backbone (``cspdet pretrain``).

The usual ImageNet recipe on an ImageFolder dataset: random resized crop + flip, label smoothing, linear
warm-up then cosine, SGD (Nesterov) or AdamW with no decay on norm weights and biases, optional EMA, AMP on
CUDA / bf16 on CPU, top-1 / top-5 on the val split. The run bookkeeping (run directory layout, exact resume,
rank-0-only files, DDP under torchrun, checkpoint writing) is shared with :class:`cspdet.engine.trainer.Trainer`
through :class:`cspdet.engine.run.TrainingRun`.

The checkpoint has ``"kind": "classifier"`` and the CSPNet ``state_dict`` under ``"model"`` (EMA weights when
EMA is on). A detector whose backbone has the same architecture loads it with ``model.weights: <run>/best.pt``
(the ``stem.*`` / ``stages.*`` tensors go to ``detector.backbone``; the classifier ``head.*`` is dropped).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, ConfigError, PretrainConfig, config_to_dict
from .distributed import all_reduce_sum
from .ema import ModelEMA, unwrap_model
from .optim import CosineSchedule, build_optimizer, set_lr
from .run import NonFiniteLossError, RunFinished, TrainingRun, all_reduce_finite, restore_rng_state, seed_everything

__all__ = ["ClassifierTrainer", "IMAGENET_MEAN", "IMAGENET_STD", "build_classifier", "evaluate_classifier"]

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

def build_classifier(pcfg: PretrainConfig, num_classes: int) -> nn.Module:
    """The CSPNet classifier named by ``pcfg.model`` (a preset of :data:`cspdet.models.BACKBONES`) with
    ``num_classes`` outputs.

    Each name builds exactly the backbone that ``create_detector`` builds for the same family (plus a pooling +
    linear head), so the checkpoint initialises that detector's backbone: ``cspresnet50`` / ``cspdarknet53``
    (timm-exact; also spelled ``csp_resnet50`` / ``csp_darknet53``), ``csp_resnext50_32x4d``,
    ``cspdarknet_{nano,tiny,s,m,l,x}`` (YOLOX CSPDarknet; ``depth`` / ``width`` override the multipliers like
    ``model.depth`` / ``model.width``), or ``custom`` with ``stem_channels`` (default 32) and ``stage_defs``
    ``[[num_blocks, out_channels, block, downsample], ...]`` (YOLOX BN, 3x3 pre-convs).

    Raises:
        ConfigError: unknown name, or a bad custom definition.
    """
    from ..models import BACKBONES, SpecError, create_classifier

    if pcfg.model not in BACKBONES:
        raise ConfigError(f"pretrain.model: unknown model {pcfg.model!r} (expected one of {', '.join(BACKBONES)})")
    overrides = dict(act=pcfg.act, depth=pcfg.depth, width=pcfg.width, stem_channels=pcfg.stem_channels,
                     stage_defs=pcfg.stage_defs)
    try:
        return create_classifier(pcfg.model, num_classes, **{k: v for k, v in overrides.items() if v is not None})
    except (SpecError, ValueError, TypeError) as err:
        raise ConfigError(f"pretrain.model: cannot build {pcfg.model!r}: {err}") from None


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader, device: torch.device, autocast=None) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy of ``model`` over ``loader``, summed over all ranks.

    Every rank must call this (it all-reduces the counts).
    """
    model.eval()
    mean, std = _norm_tensors(device)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # correct1, correct5, loss sum, count
    for images, labels in loader:
        images = (images.to(device).float() - mean) / std
        labels = labels.to(device)
        with autocast if autocast is not None else torch.autocast(device.type, enabled=False):
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(labels[:, None])
        sums += torch.stack([
            hit[:, :1].any(1).sum().double(), hit.any(1).sum().double(),
            F.cross_entropy(logits, labels, reduction="sum").double(), torch.tensor(float(len(labels)), device=device,
                                                                                   dtype=torch.float64),
        ])
    total = all_reduce_sum(sums).cpu().tolist()
    n = max(total[3], 1.0)
    return {"top1": 100.0 * total[0] / n, "top5": 100.0 * total[1] / n, "loss": total[2] / n}


def _norm_tensors(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return mean, std


class ClassifierTrainer(TrainingRun):
    """Pretrains a CSPNet classifier from ``cfg.pretrain``.

    Args:
        cfg: resolved config (only the ``pretrain`` section is used).
        resume: a classifier ``last.pt`` or run directory to continue from exactly.
        run_dir: explicit output directory (default ``pretrain.output_dir/pretrain.name``, numbered if taken).
        progress: tqdm bar per epoch on rank 0.
    """

    kind = "classifier"

    def __init__(
        self,
        cfg: Config,
        resume: str | os.PathLike | None = None,
        run_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ):
        from ..data.imagefolder import ImageFolderDataset, ImageFolderError, build_classification_loader

        self.cfg = cfg
        p = cfg.pretrain
        self._setup_process(p.device, section="pretrain")
        self.progress = progress
        if p.batch_size % self.world_size:
            raise ConfigError(f"pretrain.batch_size: {p.batch_size} is not divisible by {self.world_size} processes")
        resume_ckpt = self._load_resume(resume) if resume is not None else None
        seed_everything(p.seed + self.rank)
        self._setup_run_dir(resume_ckpt is not None, run_dir, p.output_dir, p.name, p.exist_ok)

        root = Path(p.data)
        try:
            self.train_set = ImageFolderDataset(root / "train", p.img_size, train=True, seed=p.seed)
            self.val_set = ImageFolderDataset(root / "val", p.img_size, train=False,
                                              class_names=self.train_set.class_names)
        except ImageFolderError as err:
            raise ConfigError(f"pretrain.data: {err}") from None
        per_rank = p.batch_size // self.world_size
        self.train_loader = build_classification_loader(self.train_set, per_rank, p.workers, train=True,
                                                        seed=p.seed, rank=self.rank, world_size=self.world_size)
        self.val_loader = build_classification_loader(self.val_set, per_rank, p.workers, train=False,
                                                      seed=p.seed, rank=self.rank, world_size=self.world_size)
        self.iters_per_epoch = len(self.train_loader)
        if self.iters_per_epoch == 0:
            raise ConfigError(f"pretrain.batch_size: {p.batch_size} is larger than the {len(self.train_set)} "
                              "training images")

        model = build_classifier(p, len(self.train_set.class_names)).to(self.device)
        self.model = model
        self.optimizer = build_optimizer(model, p.optimizer, lr=p.lr, momentum=p.momentum,
                                         weight_decay=p.weight_decay, nesterov=True)
        self.schedule = CosineSchedule(base_lr=p.lr, total_iters=p.epochs * self.iters_per_epoch,
                                       warmup_iters=p.warmup_epochs * self.iters_per_epoch, warmup_lr=p.warmup_lr,
                                       min_lr=p.lr * p.min_lr_ratio)
        self.ema = ModelEMA(model, p.ema_decay) if p.ema else None
        self._setup_amp(p.amp, p.bf16)
        self.start_epoch = 0
        self.iteration = 0
        self.best_top1 = -1.0
        self.rng_state: dict[str, Any] | None = None
        if resume_ckpt is not None:
            self._restore(resume_ckpt)
        self._wrap_ddp()
        # Unlike the detector, results.csv is only trimmed on resume (a reused run_dir keeps its rows).
        self._open_outputs(cfg, resuming=resume_ckpt is not None, trim_results=resume_ckpt is not None)

    def _load_resume(self, resume: str | os.PathLike) -> dict[str, Any]:
        ckpt = self._open_resume_checkpoint(resume, self.cfg.pretrain.output_dir)
        path = self.resume_path
        # Only the pretrain section matters here; the detection sections of the file may change freely.
        self._check_resume_config(
            {"pretrain": ckpt["config"].get("pretrain") or {}}, {"pretrain": config_to_dict(self.cfg)["pretrain"]},
            ("pretrain.workers", "pretrain.device"), "Resume with the run's own config",
        )
        if int(ckpt["epoch"]) >= self.cfg.pretrain.epochs:
            raise RunFinished(f"--resume: run {path.parent} already finished all {self.cfg.pretrain.epochs} epochs "
                              f"(best top-1 {float(ckpt.get('best_top1', -1)):.2f}%); nothing to do")
        return ckpt

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self._restore_training_state(ckpt, self.cfg.pretrain.ema_decay)
        self.best_top1 = self._best_score(ckpt, "best_top1")
        self._log(f"resumed {self.resume_path} at epoch {self.start_epoch}")

    def fit(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train to ``pretrain.epochs`` (or only up to epoch ``stop_after``, to be resumed later).

        Returns ``{"epoch": epochs done, "best_top1", "metrics": last evaluation, "run_dir"}``.
        """
        p = self.cfg.pretrain
        end = p.epochs if stop_after is None else min(stop_after, p.epochs)
        if self.rng_state is not None:
            restore_rng_state(self.rng_state)
        metrics: dict[str, float] = {}
        for epoch in range(self.start_epoch, end):
            train_loss, train_top1, lr, seconds = self._train_epoch(epoch)
            metrics = {}
            last = epoch + 1 == p.epochs
            if last or (p.eval_interval > 0 and (epoch + 1) % p.eval_interval == 0):
                metrics = evaluate_classifier(self.eval_model(), self.val_loader, self.device, self.autocast)
                self._log(f"epoch {epoch + 1}: top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%")
                if metrics["top1"] > self.best_top1:
                    self.best_top1 = metrics["top1"]
                    self._save(epoch + 1, self.run_dir / "best.pt", metrics, with_state=False)
            if self.is_main:
                self._write_row(epoch + 1, lr, train_loss, train_top1, metrics, seconds)
                for k, v in metrics.items():
                    self.writer.add_scalar(f"val/{k}", v, self.iteration)
            self._save(epoch + 1, self.run_dir / "last.pt", metrics, with_state=True)
        if self.writer is not None:
            self.writer.close()
        return {"epoch": end, "best_top1": self.best_top1, "metrics": metrics, "run_dir": str(self.run_dir)}

    def _train_epoch(self, epoch: int) -> tuple[float, float, float, float]:
        p = self.cfg.pretrain
        self._set_epoch(epoch)
        self.model.train()
        mean, std = _norm_tensors(self.device)
        bar = self._progress_bar(epoch, p.epochs)
        loss_sum = correct = seen = 0.0
        lr = self.schedule(self.iteration + 1)
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        for i, (images, labels) in enumerate(self.train_loader):
            lr = self.schedule(self.iteration + 1)  # the lr of the step about to be taken (step 1 > 0 with warmup_lr 0)
            set_lr(self.optimizer, lr)
            images = (images.to(self.device, non_blocking=True).float() - mean) / std
            labels = labels.to(self.device, non_blocking=True)
            with self.autocast:
                logits = self.model(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=p.label_smoothing)
            correct_local = (logits.detach().argmax(1) == labels).float().sum()
            sums, bad = all_reduce_finite(torch.stack([loss.detach(), correct_local]))
            loss_total, correct_total = sums.tolist()
            if bad[0]:
                raise NonFiniteLossError(f"classification loss became non-finite at epoch {epoch + 1}, iteration "
                                         f"{i + 1}; lower pretrain.lr or set pretrain.grad_clip")
            self.scaler.scale(loss).backward()
            self._optimizer_step(p.grad_clip)
            self.iteration += 1
            batch_total = len(labels) * self.world_size
            loss_sum += loss_total / self.world_size
            correct += correct_total
            seen += batch_total
            if self.is_main:
                if i % 10 == 0:
                    self.writer.add_scalar("train/loss", loss_total / self.world_size, self.iteration)
                    self.writer.add_scalar("train/lr", lr, self.iteration)
                if bar is not None:
                    rate = seen / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix_str(f"loss={loss_sum / (i + 1):.3f} acc={100 * correct / seen:.1f}% "
                                        f"lr={lr:.2e} {rate:.1f}img/s", refresh=False)
                    bar.update(1)
        if bar is not None:
            bar.close()
        n = max(self.iters_per_epoch, 1)
        return loss_sum / n, 100.0 * correct / max(seen, 1), lr, time.perf_counter() - start

    def _write_row(self, epoch, lr, train_loss, train_top1, metrics, seconds) -> None:
        header = ["epoch", "lr", "train/loss", "train/top1", "val/loss", "top1", "top5", "time_s"]
        row = [epoch, f"{lr:.6g}", f"{train_loss:.5f}", f"{train_top1:.3f}"]
        row += [f"{metrics[k]:.5f}" if k in metrics else "" for k in ("loss", "top1", "top5")]
        row.append(f"{seconds:.1f}")
        self._append_result_row(header, row)

    def _checkpoint_meta(self) -> dict[str, Any]:
        # A classifier's meta: what inference needs besides the spec (ImageNet-normalised RGB input).
        meta = {"class_names": list(self.train_set.class_names), "img_size": int(self.cfg.pretrain.img_size),
                "channel_order": "RGB", "pixel_mean": list(IMAGENET_MEAN), "pixel_std": list(IMAGENET_STD)}
        return {"spec": unwrap_model(self.model).spec.to_dict(), "meta": meta, "best_top1": float(self.best_top1)}
