"""Cross-stage-partial networks: the :class:`CSPStage` building block and the :class:`CSPNet` backbone.

One ``CSPNet`` class covers classification (pooling + linear head, timm-style API) and detection
(multi-scale features at strides 8/16/32). The presets reproduce published layouts exactly:
``csp_resnet50`` / ``csp_resnext50_32x4d`` / ``csp_darknet53`` (timm ``cspresnet50`` / ``cspresnext50`` /
``cspdarknet53``; weights via :func:`cspdet.models.load_timm_weights`) and ``cspdarknet(depth, width)``
(YOLOX ``CSPDarknet``).
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
from torch import nn

from .blocks import DarknetBottleneck, ResNetBottleneck, ResNeXtBottleneck
from .layers import ActLayer, ConvBNAct, DWConv, Focus, NormLayer, SPPBottleneck, YoloxBatchNorm2d

__all__ = [
    "CSPStage",
    "CSPNet",
    "ClassifierHead",
    "StageDef",
    "DEFAULT_STAGE_DEFS",
    "CSPDARKNET_SIZES",
    "csp_resnet50",
    "csp_resnext50_32x4d",
    "csp_darknet53",
    "cspdarknet",
]

#: ``(num_blocks, out_channels, block_fn, downsample)`` -- one CSP stage of a :class:`CSPNet`.
StageDef = tuple[int, int, Callable[..., nn.Module], bool]


class CSPStage(nn.Module):
    """One cross-stage-partial stage: [down conv] -> [SPP] -> [1x1 expand] -> split -> blocks on one part
    -> [partial transition] -> concat -> 1x1 fuse.

    Data flow (C_* are channel counts, every conv is a :class:`ConvBNAct` with ``norm`` / ``act``)::

        x (B, in_channels, H, W)
          -> down    kernel ``down_kernel_size``, ``stride``, in_channels -> D       (only if built, see below)
          -> spp     SPPBottleneck(D, D), pools 5/9/13                               (only if ``spp``)
          -> expand  1x1, D -> E, no activation if ``linear_expand``                  (only if ``expand``)
          -> split E channels into the block part (C_b = E * split_ratio) and the shortcut part (C_s = E - C_b)
               blocks_first=False (timm):  channels [0:C_s] = shortcut, [C_s:E] = block part
               blocks_first=True  (YOLOX): channels [0:C_b] = block part, [C_b:E] = shortcut
          -> block part: num_blocks x block_fn(C_b, C_b, norm=norm, act=act, **block_kwargs)
          -> transition_b 1x1, C_b -> C_b                                           (only if ``transition_b``)
          -> concat: [shortcut, blocks] (blocks_first=False) or [blocks, shortcut] (blocks_first=True)
          -> fuse    1x1, E -> out_channels
        -> (B, out_channels, H / stride, W / stride)

    Args:
        in_channels: channels of the stage input.
        out_channels: channels of the stage output (the ``fuse`` conv).
        num_blocks: number of blocks on the block part, >= 1.
        block_fn: block class/factory following the contract in :mod:`cspdet.models.blocks`
            (``block_fn(C_b, C_b, norm=..., act=..., **block_kwargs)``, spatial size preserved).
        stride: stride of the down conv; ``stride != 1`` forces a down conv.
        down_channels: D, output channels of the down conv. The down conv is built iff
            ``down_channels is not None or stride != 1``; when built without ``down_channels``, D = in_channels.
            Without a down conv D = in_channels.
        down_kernel_size: kernel of the down conv (3 in timm and YOLOX).
        down_groups: groups of the down conv (32 in timm CSPResNeXt-50).
        depthwise_down: make the down conv a :class:`DWConv` (``.down.dconv`` / ``.down.pconv``; YOLOX-nano).
        spp: insert ``SPPBottleneck(D, D)`` after the down conv (YOLOX's last backbone stage).
        expand: build the 1x1 expand conv. If False the split is applied to the down-conv output
            (E = D) -- the plain "pre-conv, split, blocks, concat, 1x1" stage of ``CSPNet``'s defaults.
        expand_channels: E, output channels of the expand conv (default ``out_channels``).
        linear_expand: no activation on the expand conv (timm ``cross_linear``).
        split_ratio: fraction of the E channels sent through the blocks, in (0, 1); ``E * split_ratio`` must
            be a whole number.
        transition_b: add the 1x1 partial-transition conv on the block part (timm ``conv_transition_b``;
            CSPNet paper's "fusion first + last" variant). YOLOX / C3 stages have none.
        blocks_first: channel order of the split and of the concat, see the data flow. False reproduces
            timm's ``CrossStage``, True reproduces YOLOX's ``CSPLayer``.
        block_kwargs: extra keyword arguments for every ``block_fn`` call (e.g. ``bottle_ratio``,
            ``shortcut``, ``depthwise``, ``groups``).
        norm: norm factory for every conv (``YoloxBatchNorm2d`` for YOLOX's eps 1e-3 / momentum 0.03).
        act: activation factory for every conv and block.

    Submodules (``nn.Identity`` when not built): ``down``, ``spp``, ``expand``, ``blocks`` (``nn.Sequential``),
    ``transition_b``, ``fuse``. Attributes ``block_channels`` (C_b), ``shortcut_channels`` (C_s),
    ``expand_channels`` (E), ``in_channels``, ``out_channels``, ``stride``.

    YOLOX ``CSPLayer(in_c, out_c, n, shortcut, expansion=0.5, depthwise, act)`` is exactly::

        CSPStage(in_c, out_c, n, DarknetBottleneck, expand_channels=2 * int(out_c * 0.5), blocks_first=True,
                 block_kwargs=dict(bottle_ratio=1.0, shortcut=shortcut, depthwise=depthwise),
                 norm=YoloxBatchNorm2d, act=nn.SiLU)

    with YOLOX's two parallel 1x1 convs ``conv1`` (block path) and ``conv2`` (shortcut path) stacked into
    ``expand`` (same parameter count): ``expand.conv.weight = cat([conv1.conv.weight, conv2.conv.weight])``
    and likewise each ``bn`` tensor; ``blocks.{i}`` <- ``m.{i}``; ``fuse`` <- ``conv3``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        block_fn: Callable[..., nn.Module] = DarknetBottleneck,
        *,
        stride: int = 1,
        down_channels: int | None = None,
        down_kernel_size: int = 3,
        down_groups: int = 1,
        depthwise_down: bool = False,
        spp: bool = False,
        expand: bool = True,
        expand_channels: int | None = None,
        linear_expand: bool = False,
        split_ratio: float = 0.5,
        transition_b: bool = False,
        blocks_first: bool = False,
        block_kwargs: Mapping[str, Any] | None = None,
        norm: NormLayer = nn.BatchNorm2d,
        act: ActLayer = nn.SiLU,
    ) -> None:
        super().__init__()
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be an integer >= 1 (a CSP stage needs a block branch), "
                             f"got {num_blocks!r}")
        if not 0.0 < split_ratio < 1.0:
            raise ValueError(f"split_ratio must be in (0, 1) (both the block part and the shortcut part need "
                             f"channels), got {split_ratio}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("stride", stride),
                            ("down_kernel_size", down_kernel_size), ("down_groups", down_groups)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not callable(block_fn):
            raise ValueError(f"block_fn must be a block class or factory, got {block_fn!r}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.blocks_first = blocks_first

        channels = in_channels
        if down_channels is not None or stride != 1:
            d = in_channels if down_channels is None else down_channels
            if depthwise_down:
                self.down: nn.Module = DWConv(channels, d, down_kernel_size, stride, norm=norm, act=act)
            else:
                if channels % down_groups or d % down_groups:
                    raise ValueError(f"down_groups={down_groups} must divide the down conv's in/out channels "
                                     f"({channels} -> {d})")
                self.down = ConvBNAct(channels, d, down_kernel_size, stride, groups=down_groups, norm=norm, act=act)
            channels = d
        else:
            self.down = nn.Identity()
        self.spp: nn.Module = SPPBottleneck(channels, channels, norm=norm, act=act) if spp else nn.Identity()
        if expand:
            e = out_channels if expand_channels is None else expand_channels
            self.expand: nn.Module = ConvBNAct(channels, e, 1, norm=norm, act=None if linear_expand else act)
            channels = e
        else:
            self.expand = nn.Identity()
        self.expand_channels = channels

        exact = channels * split_ratio
        block_channels = int(round(exact))
        if abs(exact - block_channels) > 1e-6 * max(1, channels) or not 0 < block_channels < channels:
            raise ValueError(f"split_ratio={split_ratio} cannot split {channels} channels into two whole, non-empty "
                             f"parts ({channels} * {split_ratio} = {exact:g}); pick channels divisible by the ratio")
        self.block_channels = block_channels
        self.shortcut_channels = channels - block_channels

        kwargs = dict(block_kwargs or {})
        self.blocks = nn.Sequential(*(block_fn(block_channels, block_channels, norm=norm, act=act, **kwargs)
                                      for _ in range(num_blocks)))
        self.transition_b: nn.Module = (ConvBNAct(block_channels, block_channels, 1, norm=norm, act=act)
                                        if transition_b else nn.Identity())
        self.fuse = ConvBNAct(channels, out_channels, 1, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride)."""
        x = self.expand(self.spp(self.down(x)))
        if self.blocks_first:
            xb, xs = x.split([self.block_channels, self.shortcut_channels], dim=1)
        else:
            xs, xb = x.split([self.shortcut_channels, self.block_channels], dim=1)
        xb = self.transition_b(self.blocks(xb))
        return self.fuse(torch.cat([xb, xs] if self.blocks_first else [xs, xb], dim=1))


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


# --------------------------------------------------------------------------------------------------------------
# Presets. timm layouts (facts from timm's model configs): every stage has a 3x3 stride-2 down conv (none in the
# stride-1 first stage of the ResNe(X)t variants), a 1x1 expand conv, a 50/50 split, a partial transition on the
# block branch and a 1x1 fuse; leaky ReLU (slope 0.01) everywhere.
# --------------------------------------------------------------------------------------------------------------

def csp_resnet50(num_classes: int = 1000, **kwargs: Any) -> CSPNet:
    """CSPResNet-50 (CSPNet paper), layer-for-layer timm ``cspresnet50``: 21,616,168 parameters at 1000 classes.

    Stem 7x7/2 conv + max-pool to 64 channels; stages (3, 3, 5, 2) blocks, widths 128/256/512/1024, strides
    4/8/16/32; expand to 2x the stage width (linear), ResNet bottlenecks with hidden = width / 4 of the expand.
    """
    widths, depths = (128, 256, 512, 1024), (3, 3, 5, 2)
    stage_defs = [(d, w, ResNetBottleneck, i > 0) for i, (d, w) in enumerate(zip(depths, widths))]
    stage_kwargs = [dict(down_channels=None if i == 0 else widths[i - 1], down_kernel_size=3, expand=True,
                         expand_channels=2 * w, linear_expand=True, transition_b=True,
                         block_kwargs=dict(bottle_ratio=0.5)) for i, w in enumerate(widths)]
    return CSPNet(stem_channels=64, stage_defs=stage_defs, num_classes=num_classes, act=nn.LeakyReLU,
                  stem_type="resnet", stage_kwargs=stage_kwargs, **kwargs)


def csp_resnext50_32x4d(num_classes: int = 1000, **kwargs: Any) -> CSPNet:
    """CSPResNeXt-50 32x4d, layer-for-layer timm ``cspresnext50``: 20,569,896 parameters at 1000 classes.

    Like :func:`csp_resnet50` with widths 256/512/1024/2048, expand = stage width (linear), ResNeXt blocks of
    32 groups with hidden = block width, and grouped (32) down convs.
    """
    widths, depths = (256, 512, 1024, 2048), (3, 3, 5, 2)
    stage_defs = [(d, w, ResNeXtBottleneck, i > 0) for i, (d, w) in enumerate(zip(depths, widths))]
    stage_kwargs = [dict(down_channels=None if i == 0 else widths[i - 1], down_kernel_size=3, down_groups=32,
                         expand=True, expand_channels=w, linear_expand=True, transition_b=True,
                         block_kwargs=dict(bottle_ratio=1.0, groups=32)) for i, w in enumerate(widths)]
    return CSPNet(stem_channels=64, stage_defs=stage_defs, num_classes=num_classes, act=nn.LeakyReLU,
                  stem_type="resnet", stage_kwargs=stage_kwargs, **kwargs)


def csp_darknet53(num_classes: int = 1000, **kwargs: Any) -> CSPNet:
    """CSPDarknet-53 (CSPNet paper / YOLOv4 backbone), layer-for-layer timm ``cspdarknet53``: 27,642,184 parameters
    at 1000 classes.

    Stem 3x3/1 conv to 32 channels; five stages of (1, 2, 8, 8, 4) Darknet blocks, widths 64..1024, strides
    2..32; every stage has a 3x3/2 down conv to its width; the first stage expands to 2x width with
    hidden = block width / 2, later stages expand to 1x width with hidden = block width.
    """
    widths, depths = (64, 128, 256, 512, 1024), (1, 2, 8, 8, 4)
    stage_defs = [(d, w, DarknetBottleneck, True) for d, w in zip(depths, widths)]
    stage_kwargs = [dict(expand=True, expand_channels=2 * w if i == 0 else w, transition_b=True,
                         block_kwargs=dict(bottle_ratio=0.5 if i == 0 else 1.0)) for i, w in enumerate(widths)]
    return CSPNet(stem_channels=32, stage_defs=stage_defs, num_classes=num_classes, act=nn.LeakyReLU,
                  pre_kernel_size=3, stem_type="darknet", stage_kwargs=stage_kwargs, **kwargs)


#: YOLOX model sizes: name -> (depth multiplier, width multiplier, depthwise).
CSPDARKNET_SIZES: dict[str, tuple[float, float, bool]] = {
    "nano": (0.33, 0.25, True),
    "tiny": (0.33, 0.375, False),
    "s": (0.33, 0.50, False),
    "m": (0.67, 0.75, False),
    "l": (1.0, 1.0, False),
    "x": (1.33, 1.25, False),
}


def cspdarknet(depth: float, width: float, depthwise: bool = False, act: type[nn.Module] = nn.SiLU,
               out_indices: Sequence[int] = (2, 3, 4), **kwargs: Any) -> CSPNet:
    """YOLOX ``CSPDarknet(depth, width)`` as a :class:`CSPNet` feature extractor (YOLOX-exact layout).

    base = ``int(64 * width)``, n = ``max(round(3 * depth), 1)``. Focus stem (3x3) to base channels; stages
    ``stages.0..3`` = YOLOX ``dark2..dark5``: a 3x3/2 down conv (a :class:`DWConv` when ``depthwise``) to
    2/4/8/16 x base channels, then a YOLOX CSP layer (:class:`CSPStage` with ``blocks_first=True``) of n, 3n,
    3n, n :class:`DarknetBottleneck` (``bottle_ratio=1.0``, residual except in the last stage, depthwise 3x3
    when ``depthwise``); the last stage has an SPP (5/9/13) between its down conv and its CSP layer. All BN use
    eps 1e-3, momentum 0.03 (:class:`YoloxBatchNorm2d`). Initialisation is YOLOX's too: PyTorch's layer
    defaults (``weight_init="torch"``; pass ``weight_init="timm"`` for timm's kaiming / zero-init-last scheme).

    Returns a ``features_only`` CSPNet: ``model(x)`` -> list of feature maps for ``out_indices`` (default
    ``(2, 3, 4)`` = dark3, dark4, dark5 at strides 8, 16, 32 with 4/8/16 x base channels, also in
    ``model.out_channels`` / ``model.out_strides``). Pass ``features_only=False, num_classes=...`` for a
    classifier. Parameter counts (feature extractor): s 4,212,672; nano 459,968; l 27,075,968.

    YOLOX checkpoint key correspondence (``backbone.backbone.`` prefix in YOLOX detectors):
    ``stem.conv`` <- ``stem.conv``; ``stages.{k}.down`` <- ``dark{k+2}.0``; ``stages.3.spp`` <- ``dark5.1``;
    CSP layer ``dark{k+2}.1`` (``dark5.2``): ``expand`` <- cat(``conv1``, ``conv2``) on dim 0,
    ``blocks.{i}`` <- ``m.{i}``, ``fuse`` <- ``conv3``.
    """
    base = int(64 * width)
    n = max(round(3 * depth), 1)
    widths, depths = [2 * base, 4 * base, 8 * base, 16 * base], [n, 3 * n, 3 * n, n]
    stage_defs = [(d, w, DarknetBottleneck, True) for d, w in zip(depths, widths)]
    stage_kwargs = [dict(depthwise_down=depthwise, spp=i == 3, expand=True, expand_channels=2 * int(w * 0.5),
                         blocks_first=True, block_kwargs=dict(bottle_ratio=1.0, shortcut=i < 3, depthwise=depthwise))
                    for i, w in enumerate(widths)]
    kwargs.setdefault("features_only", True)
    kwargs.setdefault("weight_init", "torch")  # YOLOX keeps PyTorch's default conv init
    kwargs.setdefault("num_classes", 0 if kwargs["features_only"] else 1000)
    return CSPNet(stem_channels=base, stage_defs=stage_defs, norm=YoloxBatchNorm2d, act=act, pre_kernel_size=3,
                  stem_type="focus", stage_kwargs=stage_kwargs, out_indices=out_indices, **kwargs)
