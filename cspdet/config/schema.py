"""The config schema: one dataclass per YAML section (every key documented), and :class:`ConfigError`."""


from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


__all__ = ["Config", "ConfigError", "DataConfig", "EvalConfig", "ModelConfig", "PretrainConfig", "RunOptions",
           "TrainConfig"]


class ConfigError(ValueError):
    """A configuration problem; ``str(err)`` is a complete one-line message for the user."""


@dataclass
class ModelConfig:
    """Which detector to build (``cspdet.models.create_detector``) and how to initialise it."""

    name: str = "cspdarknet_s"
    """Preset name (``cspdet.models.DETECTORS``, a registry: ``register_detector`` adds one): the YOLOX family
    cspdarknet_{nano,tiny,s,m,l,x}, cspresnet50, cspdarknet53 and ``custom``; the task-aligned family
    yolov8{n,s,m,l,x}_layout, csptal_{n,s,m,l,x}, cspresnet50_tal, yolo11{n,s,m,l,x}_layout,
    yolo26{n,s,m,l,x}_layout."""
    num_classes: int = 80
    depth: float | None = None
    """Override of the preset's depth multiplier (block counts scale with it, as in YOLOX and YOLOv8)."""
    width: float | None = None
    """Override of the preset's width multiplier (channel counts scale with it)."""
    depthwise: bool | None = None
    """Depthwise convolutions in the backbone, neck and head (the YOLOX family only, as YOLOX-Nano)."""
    act: str | None = None
    """Activation override: silu, relu, leaky_relu."""
    stem_channels: int | None = None
    """Stem width for ``name: custom``."""
    stage_defs: list[list[Any]] | None = None
    """For ``name: custom``: ``[[num_blocks, out_channels, block_name, downsample], ...]`` with block names
    ``resnet``, ``resnext``, ``darknet``."""
    head_options: dict[str, Any] | None = None
    """Constructor options of the head on top of the preset's (the task-aligned family: e.g. ``{o2o_detach:
    false}``; ``cspdet.models.tal_head.TaskAlignedHead`` lists them). Presets without head options refuse it with a
    one-line error."""
    weights: str | None = None
    """Initial weights (fine-tuning, configs/finetune.yaml): a cspdet checkpoint (detector, or a classifier's
    backbone), a YOLOX ``.pth``, a timm CspNet state dict, or an Ultralytics ``.pt``. Everything that fits is
    loaded; when the class count differs, the head's class layers start fresh (listed by name in the log); the
    file's path, format, SHA-256 and licence go into the checkpoints' ``meta.source``."""
    weights_format: Literal["auto", "cspdet", "timm", "yolox", "ultralytics"] = "auto"


@dataclass
class DataConfig:
    """Dataset, input size and augmentation (YOLOX defaults)."""

    dataset: str = "datasets/coco.yaml"
    """Dataset descriptor YAML (see datasets/README.md), relative to the working directory."""
    img_size: list[int] = field(default_factory=lambda: [640, 640])
    """Training input (height, width)."""
    workers: int | None = None
    """Loader worker processes (training and evaluation). None = auto: none when the model runs on a CPU (the
    forward/backward dominates, so every core goes to torch's threads), 4 on a GPU; see
    cspdet/engine/resources.py for the measurements."""
    cache: bool = False
    """Keep decoded images in RAM (keyed by path, size and mtime, so it never goes stale)."""
    strict: bool = False
    """Raise on the first bad image or annotation instead of skipping it with a warning."""
    max_labels: int = 120
    mosaic_prob: float = 1.0
    mosaic_scale: list[float] = field(default_factory=lambda: [0.1, 2.0])
    mixup_prob: float = 1.0
    mixup_scale: list[float] = field(default_factory=lambda: [0.5, 1.5])
    degrees: float = 10.0
    translate: float = 0.1
    shear: float = 2.0
    hsv_prob: float = 1.0
    hsv_gains: list[float] = field(default_factory=lambda: [5.0, 30.0, 30.0])
    """Max hue (0..180 scale), saturation and value shifts; each applied with p=0.5."""
    flip_prob: float = 0.5
    mosaic_pool: int = 64
    """Mosaic/MixUp partners come from blocks of about this many consecutive samples of the epoch's shuffled
    order, so each image is decoded about once per epoch; 0 = partners from the whole dataset, as YOLOX."""
    min_box_size: float = 2.0
    """After each geometric step, drop boxes whose width or height is <= this many pixels."""
    min_area_ratio: float = 0.1
    """Drop boxes with less than this fraction of their uncropped area left."""
    max_aspect_ratio: float = 20.0
    """Drop boxes with max(w/h, h/w) >= this."""
    multiscale_range: int = 0
    """Random input sizes in ``img_size +- 32 * multiscale_range`` (0 = fixed size)."""


@dataclass
class RunOptions:
    """Settings every training run has, detection (``train``) and classification pretraining (``pretrain``)."""

    amp: bool = True
    """Mixed precision on CUDA (ignored on CPU)."""
    bf16: bool | Literal["auto"] = False
    """bfloat16 autocast on CPU: true, false, or auto (on where the CPU has native bf16: AVX512-BF16 or AMX)."""
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    """auto, cpu, cuda, cuda:N."""
    exist_ok: bool = False
    """Start a new run in ``output_dir/name`` even if it holds an earlier run (whose outputs are replaced),
    instead of numbering a fresh directory (``name-2``, ``name-3``, ...)."""
    threads: int | None = None
    """Intra-op CPU threads of each training process. None = the cores this process may use (its CPU
    affinity, shared among the torchrun processes of the node) minus its training data workers, at least 1,
    and never more than torch would use anyway (OMP_NUM_THREADS); on CUDA, torch's default. More threads
    than free cores make OpenMP spin against the loader workers (see cspdet/engine/resources.py)."""


@dataclass
class TrainConfig(RunOptions):
    """Optimisation schedule and run bookkeeping (YOLOX recipe by default)."""

    epochs: int = 300
    batch_size: int = 64
    """Global batch size (split across processes under torchrun)."""
    nominal_batch_size: int | None = None
    """Accumulate gradients until this many images per step (None = no accumulation)."""
    optimizer: Literal["sgd", "adamw", "auto"] = "sgd"
    """``auto``: AdamW with lr 0.002 * 5 / (4 + classes) for short schedules (<= 10,000 optimizer steps), SGD at
    ``lr_per_image`` for long ones (what Ultralytics users expect); ``sgd`` is YOLOX's recipe."""
    lr_per_image: float = 0.01 / 64
    """Base learning rate = lr_per_image x batch size (YOLOX: 0.01 at batch 64); not used by ``auto`` -> AdamW."""
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "yolox_cosine"
    """The learning-rate schedule, a name registered in ``cspdet.engine.optim.SCHEDULES`` (``register_schedule``
    adds one): ``yolox_cosine`` = YOLOX's quadratic warm-up, cosine to ``min_lr_ratio``, constant in the no-aug
    tail."""
    warmup_epochs: float | None = None
    """Quadratic lr warm-up. None = a tenth of the run, at most 5 epochs (YOLOX: 5 of 300)."""
    warmup_lr: float = 0.0
    min_lr_ratio: float = 0.05
    no_aug_epochs: int | None = None
    """Final epochs without mosaic/mixup (the YOLOX head also switches its L1 loss on), at the minimum lr. None =
    a tenth of the run (rounded down), at most 15 epochs (YOLOX: 15 of 300; Ultralytics' close_mosaic: 10 of
    100)."""
    patience: int | None = None
    """Early stopping: end the run when AP has not improved for this many epochs (checked at each
    evaluation, so it needs ``eval_interval`` > 0). None or 0 = train all epochs."""
    ema: bool = True
    ema_decay: float = 0.9998
    sync_bn: bool = False
    freeze: int | str | list[str] | None = None
    """Modules kept fixed (fine-tuning): an int N = the first N backbone modules in forward order (stem, stages
    0, 1, ...), or module paths (``backbone``, ``neck``, ``backbone.stages.0``, ...). Frozen modules get no
    gradient and keep their BatchNorm statistics (eval mode); see cspdet/engine/freeze.py."""
    eval_interval: int = 10
    """Evaluate every N epochs (and after the last); 0 = only after the last."""
    save_interval: int = 1
    output_dir: str = "runs/train"
    name: str = "exp"
    log_images: int = 4
    """Validation images with predicted boxes logged to TensorBoard at each evaluation."""


@dataclass
class EvalConfig:
    """COCO evaluation settings. ``conf`` / ``iou`` / ``max_det`` / ``multi_label`` / ``nms_free`` left null are the
    evaluated model's head's (:class:`cspdet.models.HeadEvalDefaults`: conf 0.001, NMS IoU 0.65, 300 per image for
    the YOLOX and task-aligned heads; YOLOX's own evaluation uses 0.01 / 0.65, YOLOv8's validator 0.001 / 0.7); a
    value set here wins over the head's."""

    img_size: list[int] = field(default_factory=lambda: [640, 640])
    batch_size: int = 8
    conf: float | None = None
    """Score threshold; null = the head's (0.001 for the built-in heads)."""
    iou: float | None = None
    """NMS IoU; null = the head's (0.65 for the built-in heads)."""
    max_det: int | None = None
    """Detections kept per image; null = the head's (300 for the built-in heads)."""
    split: str = "val"
    backend: Literal["pycocotools", "faster_coco_eval"] = "pycocotools"
    nms_free: bool | None = None
    """Models with a one-to-one branch: score its NMS-free top-k (true) or the NMS path (false); null = the
    model's default (NMS-free when it has the branch)."""
    multi_label: bool | None = None
    """Every class above conf of a point is a candidate (YOLOv8's validator); null = the head's convention:
    single-label for the YOLOX family (mAP equal to YOLOX's), multi-label for the task-aligned family."""


@dataclass
class PretrainConfig(RunOptions):
    """Classification pretraining of a CSPNet backbone on an ImageFolder dataset."""

    model: str = "csp_resnet50"
    """A CSPNet preset (csp_resnet50, csp_resnext50_32x4d, csp_darknet53, cspdarknet_s, ...) or ``custom``."""
    stem_channels: int | None = None
    stage_defs: list[list[Any]] | None = None
    data: str = "datasets/imagenet"
    """ImageFolder root with train/<class>/*.jpg and val/<class>/*.jpg."""
    img_size: int = 224
    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.1
    optimizer: Literal["sgd", "adamw"] = "sgd"
    weight_decay: float = 1e-4
    warmup_epochs: float = 5.0
    label_smoothing: float = 0.1
    ema: bool = False
    ema_decay: float = 0.9998
    workers: int = 4
    act: str | None = None
    """Activation override (silu, relu, leaky_relu); must match the detector that will load the backbone."""
    depth: float | None = None
    """Depth multiplier override for ``cspdarknet_*`` (as ``model.depth`` of the detector)."""
    width: float | None = None
    """Width multiplier override for ``cspdarknet_*`` (as ``model.width`` of the detector)."""
    momentum: float = 0.9
    """SGD momentum (Nesterov), or AdamW's beta1."""
    min_lr_ratio: float = 0.0
    """The cosine ends at ``lr * min_lr_ratio``."""
    warmup_lr: float = 0.0
    eval_interval: int = 1
    output_dir: str = "runs/pretrain"
    name: str = "exp"


@dataclass
class Config:
    """A whole run: the sections of one YAML file (after ``_base_`` merging and overrides)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


