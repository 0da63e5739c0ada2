"""Classification pretraining of a CSPNet backbone (``cspdet pretrain``).

The usual ImageNet recipe on an ImageFolder dataset: random resized crop + flip, label smoothing, linear
warm-up then cosine, SGD (Nesterov) or AdamW with no decay on norm weights and biases, optional EMA, AMP on
CUDA / bf16 on CPU, top-1 / top-5 on the val split. The run bookkeeping (run directory layout, exact resume,
rank-0-only files, DDP under torchrun, checkpoint writing) and the training loop itself are shared with
:class:`cspdet.engine.trainer.Trainer` through :class:`cspdet.engine.run.TrainingRun`; this module plugs in the
classification step (:meth:`ClassifierTrainer.train_step`), its evaluation and its meter.

The checkpoint has ``"kind": "classifier"`` and the CSPNet ``state_dict`` under ``"model"`` (EMA weights when
EMA is on). A detector whose backbone has the same architecture loads it with ``model.weights: <run>/best.pt``
(the ``stem.*`` / ``stages.*`` tensors go to ``detector.backbone``; the classifier ``head.*`` is dropped).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, ConfigError, PretrainConfig, config_to_dict
from .callbacks import EpochStats, format_epochs
from .distributed import all_reduce_sum
from .ema import ModelEMA, unwrap_model
from .optim import CosineSchedule, build_optimizer
from .run import EpochMeter, NonFiniteLossError, RunFinished, TrainingRun, all_reduce_finite, seed_everything

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
        progress: tqdm bar per epoch on rank 0 (the run header and one line per epoch are printed either way).

    ``trainer.callbacks`` (:mod:`cspdet.engine.callbacks`) may be extended before ``fit()``.
    """

    kind = "classifier"
    sections = ("pretrain",)
    summary_metrics = ("top1", "top5")
    score_key, score_name = "top1", "top-1"
    best_key = "best_top1"

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
        self._setup_threads(p.threads, p.workers, section="pretrain")
        self.progress = progress
        self.total_epochs, self.eval_interval, self.grad_clip = p.epochs, p.eval_interval, p.grad_clip
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
        if p.batch_size > len(self.train_set):
            raise ConfigError(f"pretrain.batch_size: {p.batch_size} is larger than the {len(self.train_set)} training "
                              f"images of {root / 'train'}; use at most {len(self.train_set)}")
        per_rank = p.batch_size // self.world_size
        self.train_loader = build_classification_loader(self.train_set, per_rank, p.workers, train=True,
                                                        seed=p.seed, rank=self.rank, world_size=self.world_size)
        self.val_loader = build_classification_loader(self.val_set, per_rank, p.workers, train=False,
                                                      seed=p.seed, rank=self.rank, world_size=self.world_size)
        self.iters_per_epoch = len(self.train_loader)
        self._norm = _norm_tensors(self.device)  # (mean, std) of the input normalisation

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
        self.best_score = -1.0
        self.rng_state: dict[str, Any] | None = None
        if resume_ckpt is not None:
            self._restore(resume_ckpt)
        self._wrap_ddp()
        # Unlike the detector, results.csv is only trimmed on resume (a reused run_dir keeps its rows).
        self._open_outputs(cfg, resuming=resume_ckpt is not None, trim_results=resume_ckpt is not None,
                           exist_ok=p.exist_ok)

    @property
    def best_top1(self) -> float:
        """The best top-1 accuracy (%) so far (:attr:`best_score`); -1 before the first evaluation."""
        return self.best_score

    def _load_resume(self, resume: str | os.PathLike) -> dict[str, Any]:
        ckpt = self._open_resume_checkpoint(resume, self.cfg.pretrain.output_dir)
        path = self.resume_path
        # Only the pretrain section matters here; the detection sections of the file may change freely.
        self._check_resume_config(
            ckpt["config"], config_to_dict(self.cfg),
            ("pretrain.workers", "pretrain.device", "pretrain.threads"), "Resume with the run's own config",
        )
        if int(ckpt["epoch"]) >= self.cfg.pretrain.epochs:
            raise RunFinished(f"--resume: run {path.parent} already finished all {self.cfg.pretrain.epochs} epochs "
                              f"(best top-1 {float(ckpt.get('best_top1', -1)):.2f}%); nothing to do")
        return ckpt

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self._restore_training_state(ckpt, self.cfg.pretrain.ema_decay)
        self.best_score = self._best_score(ckpt, self.best_key)
        self._log(f"resumed {self.resume_path} at epoch {self.start_epoch}")

    def evaluate(self, epoch: int, outputs: bool | None = None) -> dict[str, float]:
        """Top-1 / top-5 / loss of :meth:`eval_model` on the val split (:func:`evaluate_classifier`)."""
        return evaluate_classifier(self.eval_model(), self.val_loader, self.device, self.autocast)

    def new_meter(self) -> EpochMeter:
        return _AccuracyMeter()

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor], epoch: int, i: int
                   ) -> tuple[torch.Tensor, dict[str, float], int]:
        """Normalise, forward under autocast, label-smoothed cross-entropy; the loss averaged and the correct
        predictions counted over ranks."""
        images, labels = batch
        mean, std = self._norm
        images = (images.to(self.device, non_blocking=True).float() - mean) / std
        labels = labels.to(self.device, non_blocking=True)
        with self.autocast:
            logits = self.model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.pretrain.label_smoothing)
        correct_local = (logits.detach().argmax(1) == labels).float().sum()
        sums, bad = all_reduce_finite(torch.stack([loss.detach(), correct_local]))
        loss_total, correct_total = sums.tolist()
        if bad[0]:
            raise NonFiniteLossError(f"classification loss became non-finite at epoch {epoch + 1}, iteration "
                                     f"{i + 1}; lower pretrain.lr or set pretrain.grad_clip")
        return loss, {"loss": loss_total / self.world_size, "correct": correct_total}, len(labels)

    def results_row(self, stats: EpochStats) -> tuple[list[str], list[Any]]:
        header = ["epoch", "lr", "train/loss", "train/top1", "val/loss", "top1", "top5", "time_s"]
        row = [stats.epoch + 1, f"{stats.lr:.6g}", f"{stats.losses['loss']:.5f}", f"{stats.extra['acc']:.3f}"]
        row += [f"{stats.metrics[k]:.5f}" if k in stats.metrics else "" for k in ("loss", "top1", "top5")]
        row.append(f"{stats.seconds:.1f}")
        return header, row

    def _header_lines(self) -> list[str]:
        from ..models.info import model_info

        p = self.cfg.pretrain
        info = model_info(unwrap_model(self.model), p.img_size)
        evals = (f"every {format_epochs(p.eval_interval, 'epoch')} and after the last" if p.eval_interval
                 else "after the last epoch")
        model = (f"model     {p.model}: {info['params_m']:.2f} M parameters, {info['gflops']:.2f} GFLOPs at "
                 f"{p.img_size}x{p.img_size}")
        workers = min(p.workers, os.cpu_count() or 1)
        data = (f"data      {p.data}: {len(self.train_set)} train / {len(self.val_set)} val images, "
                f"{len(self.train_set.class_names)} classes; batch {p.batch_size} = {self.iters_per_epoch} iterations "
                f"per epoch; {workers} loader worker{'s' if workers != 1 else ''}")
        schedule = (f"schedule  {format_epochs(p.epochs)}, {p.optimizer} lr {p.lr:g}, warm-up "
                    f"{format_epochs(p.warmup_epochs)}, cosine to {p.lr * p.min_lr_ratio:g}; evaluate {evals}")
        return [model, data, schedule]

    def _checkpoint_meta(self) -> dict[str, Any]:
        # A classifier's meta: what inference needs besides the spec (ImageNet-normalised RGB input).
        meta = {"class_names": list(self.train_set.class_names), "img_size": int(self.cfg.pretrain.img_size),
                "channel_order": "RGB", "pixel_mean": list(IMAGENET_MEAN), "pixel_std": list(IMAGENET_STD)}
        return {"spec": unwrap_model(self.model).spec.to_dict(), "meta": meta, self.best_key: float(self.best_score)}


class _AccuracyMeter(EpochMeter):
    """The classifier's epoch: mean loss and the train accuracy (correct predictions of all ranks / images)."""

    def __init__(self):
        super().__init__(("loss",))
        self.correct = 0.0

    def update(self, logged: dict[str, float], images: int) -> dict[str, float]:
        self.correct += logged["correct"]
        return super().update(logged, images)

    def postfix(self) -> str:
        return f"loss={self.sums['loss'] / self.count:.3f} acc={100 * self.correct / self.images:.1f}%"

    def extra(self) -> dict[str, float]:
        return {"acc": 100.0 * self.correct / max(self.images, 1)}
