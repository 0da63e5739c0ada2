"""Cross-stage-partial networks: the :class:`CSPNet` backbone (stem -> :class:`~cspdet.models.CSPStage` s).

One ``CSPNet`` class covers classification (pooling + linear head, timm-style API) and detection
(multi-scale features at strides 8/16/32). A CSPNet is described by data, a
:class:`~cspdet.models.spec.BackboneSpec` (``net.spec``, ``CSPNet.from_spec``); the published presets
(timm's CSPResNet/ResNeXt/Darknet, YOLOX's CSPDarknet) are specs in :mod:`cspdet.models.backbones`.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
from torch import nn

from .blocks import ResNetBottleneck
from .csp_stage import CSPStage
from .layers import ActLayer, ConvBNAct, Focus, NormLayer
from .registry import ACTIVATIONS, BACKBONE_KINDS, BLOCKS, NORMS
from .spec import BackboneSpec, StageSpec, plain_data

__all__ = ["CSPNet", "ClassifierHead", "StageDef", "DEFAULT_STAGE_DEFS"]

#: ``(num_blocks, out_channels, block_fn, downsample)`` -- one CSP stage of a :class:`CSPNet`.
StageDef = tuple[int, int, Callable[..., nn.Module], bool]


class ClassifierHead(nn.Module):
    """[1x1 ConvBNAct to ``feature_channels``] -> global pool -> flatten -> dropout -> linear.

    Shapes: (B, C, H, W) -> (B, num_classes); ``pre_logits=True`` returns the (B, num_features) pooled
    features instead. ``num_classes=0`` makes ``fc`` an ``nn.Identity``.
    """

    def __init__(self, in_channels: int, num_classes: int, global_pool: str = "avg", dropout: float = 0.0,
                 feature_channels: int | None = None, norm: NormLayer = nn.BatchNorm2d,
                 act: ActLayer = nn.ReLU) -> None:
        super().__init__()
        self.feature: nn.Module = (ConvBNAct(in_channels, feature_channels, 1, norm=norm, act=act)
                                   if feature_channels else nn.Identity())
        self.num_features = feature_channels or in_channels
        self.global_pool = _make_pool(global_pool)
        self.pool_type = global_pool
        self.drop = nn.Dropout(dropout)
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = _make_pool(global_pool)
            self.pool_type = global_pool
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.fc, nn.Linear):
            nn.init.normal_(self.fc.weight, std=0.01)
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(torch.flatten(self.global_pool(self.feature(x)), 1))
        return x if pre_logits else self.fc(x)


def _make_pool(global_pool: str) -> nn.Module:
    if global_pool == "avg":
        return nn.AdaptiveAvgPool2d(1)
    if global_pool == "max":
        return nn.AdaptiveMaxPool2d(1)
    raise ValueError(f"global_pool must be 'avg' or 'max', got {global_pool!r}")


#: ``CSPNet(stage_defs=None)``: four ResNet-bottleneck stages, ResNet-50 depths, total stride 32.
DEFAULT_STAGE_DEFS: tuple[StageDef, ...] = (
    (3, 128, ResNetBottleneck, True),
    (4, 256, ResNetBottleneck, True),
    (6, 512, ResNetBottleneck, True),
    (3, 1024, ResNetBottleneck, True),
)

_STEM_TYPES = ("conv", "resnet", "darknet", "focus")
_STAGE_KEYS = frozenset(inspect.signature(CSPStage.__init__).parameters) - {"self", "in_channels", "out_channels",
                                                                             "num_blocks", "block_fn"}


def _build_stem(stem_type: str, in_channels: int, channels: int, norm: NormLayer,
                act: ActLayer) -> tuple[nn.Module, int]:
    """The stem module (its first conv is always reachable as ``stem.conv``) and its total stride."""
    if stem_type == "conv":
        return nn.Sequential(OrderedDict(conv=ConvBNAct(in_channels, channels, 3, 2, norm=norm, act=act))), 2
    if stem_type == "resnet":
        return nn.Sequential(OrderedDict(conv=ConvBNAct(in_channels, channels, 7, 2, norm=norm, act=act),
                                         pool=nn.MaxPool2d(3, stride=2, padding=1))), 4
    if stem_type == "darknet":
        return nn.Sequential(OrderedDict(conv=ConvBNAct(in_channels, channels, 3, 1, norm=norm, act=act))), 1
    if stem_type == "focus":
        return Focus(in_channels, channels, 3, norm=norm, act=act), 2
    raise ValueError(f"stem_type must be one of {_STEM_TYPES}, got {stem_type!r}")


class CSPNet(nn.Module):
    """Cross-stage-partial network: stem -> CSP stages -> (classifier head | multi-scale features).

    Args:
        in_channels: input image channels.
        stem_channels: output channels of the stem.
        stage_defs: one ``(num_blocks, out_channels, block_fn, downsample)`` per stage (default
            :data:`DEFAULT_STAGE_DEFS`). Stage ``i`` is a :class:`CSPStage`: a **pre-conv** (kernel
            ``pre_kernel_size``, stride 2 when ``downsample`` else 1, to ``out_channels``), a **split** of its
            output by ``split_ratio`` (``out_channels * split_ratio`` channels go through the blocks, the rest
            is the shortcut), ``num_blocks`` blocks ``block_fn(c, c, norm=norm, act=act)`` on the block part
            (any class with the contract of :mod:`cspdet.models.blocks`), **concat** [shortcut, blocks] and a
            1x1 **fuse** conv to ``out_channels``.
        num_classes: classifier outputs; 0 keeps the pooled features (``fc`` is ``nn.Identity``).
        norm: norm layer class (``YoloxBatchNorm2d`` for YOLOX's BN eps/momentum).
        act: activation class used everywhere.
        split_ratio: fraction of a stage's channels sent through its blocks, in (0, 1).
        global_pool: "avg" or "max" global pooling before the classifier.
        dropout: dropout probability after pooling, in [0, 1).
        feature_channels: when set, a 1x1 ConvBNAct to this width before pooling (``head.feature``).
        pre_kernel_size: kernel size of each stage's pre-conv.

    Keyword-only extras (used by the presets):
        stem_type: "conv" (3x3 stride 2, default), "resnet" (7x7 s2 + 3x3 s2 max-pool, total stride 4),
            "darknet" (3x3 stride 1), "focus" (YOLOX Focus: space-to-depth + 3x3 conv, total stride 2).
        stage_kwargs: extra :class:`CSPStage` keyword arguments overriding the per-stage defaults above:
            one mapping applied to every stage, or a sequence with one mapping per stage. This is where a
            1x1 expand conv (``expand``, ``expand_channels``, ``linear_expand`` = timm cross_linear), the
            partial transition (``transition_b``), the concat order (``blocks_first``), SPP (``spp``),
            depthwise down convs (``depthwise_down``), down-conv width/groups and ``block_kwargs`` are set.
        features_only: build no head; ``forward`` returns the feature maps of ``out_indices``.
        out_indices: which feature maps :meth:`forward_multiscale` returns, indexing :attr:`feature_info`
            (0 = stem output, ``i`` = output of stage ``i - 1``, as in timm); default the last three, which
            are strides 8, 16, 32 for every preset.
        weight_init: "timm" (default): timm's CspNet init -- convs ``kaiming_normal_`` (fan-out, ReLU gain),
            norm scale 1 / shift 0, linear ``normal_(std=0.01)`` with zero bias, then ``zero_init_last()`` on
            every block that has one (the last BN of each residual branch starts at 0). "torch": keep PyTorch's
            layer defaults (conv ``kaiming_uniform_(a=sqrt(5))``, i.e. U(+-1/sqrt(fan_in))), which is what
            YOLOX trains from; :func:`cspdarknet` uses it so training from scratch matches YOLOX.

    Attributes:
        feature_info: ``[{"num_chs", "reduction", "module"}]`` for the stem and every stage.
        out_channels / out_strides: channels and strides of the ``out_indices`` feature maps.
        num_features: channels entering the classifier's linear layer.

    Shapes: ``forward``: (B, in_channels, H, W) -> (B, num_classes) logits, or with ``features_only`` a
    list of (B, out_channels[k], H / out_strides[k], W / out_strides[k]).

    Example (ResNet bottlenecks, 4 stages):

    >>> import torch
    >>> from cspdet.models import CSPNet, ResNetBottleneck
    >>> model = CSPNet(stem_channels=32, num_classes=10, stage_defs=[
    ...     (1, 64, ResNetBottleneck, True),
    ...     (2, 128, ResNetBottleneck, True),
    ...     (2, 256, ResNetBottleneck, True),
    ...     (1, 512, ResNetBottleneck, True),
    ... ])
    >>> x = torch.randn(2, 3, 64, 64)
    >>> model(x).shape
    torch.Size([2, 10])
    >>> model.forward_features(x).shape
    torch.Size([2, 512, 2, 2])
    >>> [tuple(f.shape) for f in model.forward_multiscale(x)], model.out_strides
    ([(2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)], [8, 16, 32])
    """

    def __init__(
        self,
        in_channels: int = 3,
        stem_channels: int = 64,
        stage_defs: list[tuple[int, int, Callable, bool]] | None = None,
        num_classes: int = 1000,
        norm: type[nn.Module] = nn.BatchNorm2d,
        act: type[nn.Module] = nn.ReLU,
        split_ratio: float = 0.5,
        global_pool: Literal["avg", "max"] = "avg",
        dropout: float = 0.0,
        feature_channels: int | None = None,
        pre_kernel_size: int = 1,
        *,
        stem_type: Literal["conv", "resnet", "darknet", "focus"] = "conv",
        stage_kwargs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        features_only: bool = False,
        out_indices: Sequence[int] | None = None,
        weight_init: Literal["timm", "torch"] = "timm",
    ) -> None:
        super().__init__()
        # The arguments as given; :attr:`spec` turns them into data (naming classes through the registries).
        self._spec_args: dict[str, Any] = dict(
            in_channels=in_channels, stem_channels=stem_channels, stage_defs=stage_defs, num_classes=num_classes,
            norm=norm, act=act, split_ratio=split_ratio, global_pool=global_pool, dropout=dropout,
            feature_channels=feature_channels, pre_kernel_size=pre_kernel_size, stem_type=stem_type,
            stage_kwargs=stage_kwargs, features_only=features_only, out_indices=out_indices, weight_init=weight_init)
        if weight_init not in ("timm", "torch"):
            raise ValueError(f"weight_init must be 'timm' or 'torch', got {weight_init!r}")
        if not 0.0 < split_ratio < 1.0:
            raise ValueError(f"split_ratio must be in (0, 1) (both the block part and the shortcut part need "
                             f"channels), got {split_ratio}")
        if global_pool not in ("avg", "max"):
            raise ValueError(f"global_pool must be 'avg' or 'max', got {global_pool!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        if feature_channels is not None and (not isinstance(feature_channels, int) or feature_channels < 1):
            raise ValueError(f"feature_channels must be None or a positive integer, got {feature_channels!r}")
        if not isinstance(pre_kernel_size, int) or pre_kernel_size < 1:
            raise ValueError(f"pre_kernel_size must be a positive integer, got {pre_kernel_size!r}")
        for name, value in (("in_channels", in_channels), ("stem_channels", stem_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        stage_defs = list(DEFAULT_STAGE_DEFS if stage_defs is None else stage_defs)
        if not stage_defs:
            raise ValueError("stage_defs must contain at least one stage")
        per_stage = _per_stage_kwargs(stage_kwargs, len(stage_defs))

        self.stem, reduction = _build_stem(stem_type, in_channels, stem_channels, norm, act)
        self.feature_info: list[dict[str, Any]] = [dict(num_chs=stem_channels, reduction=reduction, module="stem")]
        stages, channels = [], stem_channels
        for i, stage_def in enumerate(stage_defs):
            if not isinstance(stage_def, (tuple, list)) or len(stage_def) != 4:
                raise ValueError(f"stage_defs[{i}] must be (num_blocks, out_channels, block_fn, downsample), "
                                 f"got {stage_def!r}")
            num_blocks, out_channels, block_fn, downsample = stage_def
            if not isinstance(num_blocks, int) or num_blocks < 1:
                raise ValueError(f"stage_defs[{i}]: num_blocks must be an integer >= 1, got {num_blocks!r}")
            if not isinstance(out_channels, int) or out_channels < 1:
                raise ValueError(f"stage_defs[{i}]: out_channels must be a positive integer, got {out_channels!r}")
            kwargs: dict[str, Any] = dict(stride=2 if downsample else 1, down_channels=out_channels,
                                          down_kernel_size=pre_kernel_size, expand=False, split_ratio=split_ratio,
                                          norm=norm, act=act)
            kwargs.update(per_stage[i])
            try:
                stage = CSPStage(channels, out_channels, num_blocks, block_fn, **kwargs)
            except ValueError as err:
                raise ValueError(f"stage_defs[{i}] {tuple(stage_def)}: {err}") from None
            stages.append(stage)
            reduction *= stage.stride
            channels = out_channels
            self.feature_info.append(dict(num_chs=channels, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)

        n_info = len(self.feature_info)
        out_indices = tuple(range(max(0, n_info - 3), n_info)) if out_indices is None else tuple(out_indices)
        if not out_indices or any(not isinstance(i, int) or not 0 <= i < n_info for i in out_indices):
            raise ValueError(f"out_indices must be non-empty indices into feature_info (0 = stem, 1..{n_info - 1} "
                             f"= stages), got {out_indices}")
        self.out_indices = out_indices
        self.features_only = features_only
        self.num_classes = 0 if features_only else num_classes
        self.head: ClassifierHead | None = None
        self.num_features = feature_channels or channels
        if not features_only:
            self.head = ClassifierHead(channels, num_classes, global_pool, dropout, feature_channels, norm, act)
        self.weight_init = weight_init
        if weight_init == "timm":
            self._init_weights_timm()

    @property
    def spec(self) -> BackboneSpec:
        """This network as data (:class:`~cspdet.models.spec.BackboneSpec`); ``CSPNet.from_spec(net.spec)``
        builds the same layers.

        Raises:
            SpecError: a class it was built with (block, norm, activation) has no name a spec can store
                (a lambda or local definition): register it (``cspdet.models.register_block`` etc.).
        """
        return _spec_from_args(**self._spec_args)

    @classmethod
    def from_spec(cls, spec: BackboneSpec, **overrides: Any) -> CSPNet:
        """Build the network ``spec`` describes; ``overrides`` replace constructor arguments (e.g.
        ``features_only=True``, ``act=nn.SiLU``)."""
        return cls(**{**_args_from_spec(spec), **overrides})

    @property
    def out_channels(self) -> list[int]:
        """Channels of the feature maps returned by :meth:`forward_multiscale` (order of ``out_indices``)."""
        return [self.feature_info[i]["num_chs"] for i in self.out_indices]

    @property
    def out_strides(self) -> list[int]:
        """Strides (input pixels per feature cell) of the :meth:`forward_multiscale` maps."""
        return [self.feature_info[i]["reduction"] for i in self.out_indices]

    def _init_weights_timm(self) -> None:
        """timm's CspNet initialisation (see ``weight_init``); "torch" skips this and keeps layer defaults."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # After the convs (timm applies it after a block's children): residual blocks start as the identity.
        for m in self.modules():
            zero_init_last = getattr(m, "zero_init_last", None)
            if m is not self and callable(zero_init_last):
                zero_init_last()

    def _require_head(self, what: str) -> ClassifierHead:
        if self.head is None:
            raise RuntimeError(f"{what} is unavailable: this CSPNet was built with features_only=True (no head)")
        return self.head

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` when ``num_classes == 0``)."""
        return self._require_head("get_classifier()").fc

    def reset_classifier(self, num_classes: int, global_pool: Literal["avg", "max"] | None = None) -> None:
        """Replace the linear layer with a fresh one for ``num_classes`` outputs (0 = no linear layer)."""
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        self._require_head("reset_classifier()").reset(num_classes, global_pool)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> last stage output (B, feature_info[-1]["num_chs"], H / stride, W / stride)."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Last stage output -> (B, num_classes) logits, or (B, num_features) pooled features if ``pre_logits``."""
        return self._require_head("forward_head()")(x, pre_logits=pre_logits)

    def forward_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C_in, H, W) -> the ``out_indices`` feature maps, shapes (B, out_channels[k], H / out_strides[k],
        W / out_strides[k]); stages after the deepest requested index are not run."""
        wanted, last = set(self.out_indices), max(self.out_indices)
        feats: dict[int, torch.Tensor] = {}
        x = self.stem(x)
        if 0 in wanted:
            feats[0] = x
        for i, stage in enumerate(self.stages, start=1):
            if i > last:
                break
            x = stage(x)
            if i in wanted:
                feats[i] = x
        return [feats[i] for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_multiscale(x)
        return self.forward_head(self.forward_features(x))


def _per_stage_kwargs(stage_kwargs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
                      num_stages: int) -> list[dict[str, Any]]:
    if stage_kwargs is None:
        items: list[Mapping[str, Any]] = [{}] * num_stages
    elif isinstance(stage_kwargs, Mapping):
        items = [stage_kwargs] * num_stages
    else:
        items = list(stage_kwargs)
        if len(items) != num_stages:
            raise ValueError(f"stage_kwargs has {len(items)} entries but stage_defs has {num_stages} stages")
    out = []
    for i, item in enumerate(items):
        unknown = set(item) - _STAGE_KEYS
        if unknown:
            raise ValueError(f"stage_kwargs[{i}]: unknown CSPStage option(s) {sorted(unknown)}; "
                             f"valid: {sorted(_STAGE_KEYS)}")
        out.append(dict(item))
    return out


def _spec_from_args(*, stage_defs: Sequence[StageDef] | None, stage_kwargs: Any, norm: Any, act: Any,
                    **args: Any) -> BackboneSpec:
    """The :class:`BackboneSpec` of ``CSPNet(**args)``: classes become registry names."""
    stage_defs = list(DEFAULT_STAGE_DEFS if stage_defs is None else stage_defs)
    stages = []
    for i, ((num_blocks, out_channels, block_fn, downsample), options) in enumerate(
            zip(stage_defs, _per_stage_kwargs(stage_kwargs, len(stage_defs)))):
        named = {k: NORMS.name_of(v) if k == "norm" else ACTIVATIONS.name_of(v) if k == "act"
                 else plain_data(v, f"stage_kwargs[{i}].{k}") for k, v in options.items()}
        stages.append(StageSpec(int(num_blocks), int(out_channels), BLOCKS.name_of(block_fn), bool(downsample),
                                named))
    return BackboneSpec(stages=tuple(stages), norm=NORMS.name_of(norm), act=ACTIVATIONS.name_of(act), **args)


def _args_from_spec(spec: BackboneSpec) -> dict[str, Any]:
    """``CSPNet`` constructor arguments from a spec: registry names become classes again."""
    if spec.kind != "cspnet" or spec.options:
        raise ValueError(f"CSPNet.from_spec: backbone kind {spec.kind!r} with options {dict(spec.options)} is not a "
                         "plain 'cspnet'")
    stage_defs = [(s.num_blocks, s.out_channels, BLOCKS.get(s.block), s.downsample) for s in spec.stages]
    stage_kwargs = [{k: NORMS.get(v) if k == "norm" else ACTIVATIONS.get(v) if k == "act" else v
                     for k, v in s.options.items()} for s in spec.stages]
    args = {f: getattr(spec, f) for f in ("in_channels", "stem_channels", "num_classes", "split_ratio",
                                          "global_pool", "dropout", "feature_channels", "pre_kernel_size",
                                          "stem_type", "features_only", "out_indices", "weight_init")}
    return dict(args, stage_defs=stage_defs, stage_kwargs=stage_kwargs if any(stage_kwargs) else None,
                norm=NORMS.get(spec.norm), act=ACTIVATIONS.get(spec.act))


BACKBONE_KINDS.register("cspnet", CSPNet)
