"""The ELAN backbone (YOLOv8 / YOLO11 / YOLO26): stem conv -> C2f / C3k2 stages (each with a stride-2 down conv)
-> SPPF [-> C2PSA], with the feature API of a ``features_only`` :class:`~cspdet.models.CSPNet` (``out_channels``,
``out_strides``, ``feature_info``). Its stages and blocks are in :mod:`cspdet.models.elan_blocks`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .attention import C2PSA
from .elan_blocks import SPPF, C2fStage, _check_positive
from .layers import ActLayer, ConvBNAct, NormLayer, YoloxBatchNorm2d
from .registry import ACTIVATIONS, BACKBONE_KINDS, BLOCKS, NORMS, STAGES
from .spec import BackboneSpec, StageSpec, plain_data

__all__ = ["C2fNet"]


class C2fNet(nn.Module):
    """Backbone: 3x3/2 stem conv -> stages (each a stride-2 down conv + an ELAN stage) -> SPPF [-> C2PSA] on the
    last.

    Args:
        stage_defs: one ``(num_blocks, out_channels)`` per stage; every stage halves the resolution
            (stem stride 2, so four stages give strides 4, 8, 16, 32).
        stem_channels: output channels of the 3x3/2 stem conv.
        stage_fn: the stage class, called as ``stage_fn(c_in, c_out, n, stride=2, down_channels=c_out, norm=...,
            act=..., **stage_kwargs[i])``: :class:`C2fStage` (YOLOv8) or :class:`C3k2Stage` (YOLO11 / YOLO26).
        stage_kwargs: extra keywords for every stage (one mapping) or per stage (a sequence), e.g.
            ``dict(block_kwargs=dict(shortcut=True))`` or ``[dict(c3k=False, expansion=0.25), ...]``; a
            ``down_channels`` there sets that stage's down-conv width (YOLO11: half the stage width in the
            first two stages).
        sppf: append :class:`SPPF` (``sppf_kernel``) after the last stage; its output replaces that stage's
            feature (YOLOv8: SPPF(k=5)).
        sppf_options: more :class:`SPPF` keywords (YOLO26: ``dict(shortcut=True, conv1_act=False)``).
        psa_blocks: PSA blocks of a :class:`~cspdet.models.attention.C2PSA` after the SPPF (YOLO11 / YOLO26 n: 1);
            0 = none.
        out_indices: indices into :attr:`feature_info` (0 = stem, i = stage i-1) returned by ``forward``;
            default the last three (strides 8/16/32 with four stages).
        in_channels, norm, act: image channels, norm and activation factories.

    Shapes: (B, in_channels, H, W) -> list of (B, out_channels[k], H / out_strides[k], W / out_strides[k]).
    Attributes like a ``features_only`` CSPNet: ``feature_info``, ``out_indices``, ``out_channels``,
    ``out_strides``, ``features_only = True``. Initialisation: PyTorch layer defaults (as YOLOv8 trains from).
    """

    features_only = True

    def __init__(
        self,
        stage_defs: Sequence[tuple[int, int]],
        stem_channels: int,
        stage_fn: Callable[..., nn.Module] = C2fStage,
        stage_kwargs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        sppf: bool = True,
        sppf_kernel: int = 5,
        sppf_options: Mapping[str, Any] | None = None,
        psa_blocks: int = 0,
        out_indices: Sequence[int] | None = None,
        in_channels: int = 3,
        norm: NormLayer = YoloxBatchNorm2d,
        act: ActLayer = nn.SiLU,
    ) -> None:
        super().__init__()
        _check_positive(stem_channels=stem_channels, in_channels=in_channels)
        if isinstance(stage_fn, str):
            stage_fn = STAGES.get(stage_fn)
        self._spec_args = dict(stage_defs=stage_defs, stem_channels=stem_channels, stage_fn=stage_fn,
                               stage_kwargs=stage_kwargs, sppf=sppf, sppf_kernel=sppf_kernel,
                               sppf_options=dict(sppf_options or {}), psa_blocks=psa_blocks, out_indices=out_indices,
                               in_channels=in_channels, norm=norm, act=act)
        stage_defs = [tuple(sd) for sd in stage_defs]
        if not stage_defs or any(len(sd) != 2 for sd in stage_defs):
            raise ValueError(f"stage_defs must be a non-empty list of (num_blocks, out_channels), got {stage_defs}")
        if stage_kwargs is None or isinstance(stage_kwargs, Mapping):
            per_stage = [dict(stage_kwargs or {}) for _ in stage_defs]
        else:
            per_stage = [dict(k) for k in stage_kwargs]
            if len(per_stage) != len(stage_defs):
                raise ValueError(f"stage_kwargs has {len(per_stage)} entries but there are {len(stage_defs)} stages")
        self.stem = ConvBNAct(in_channels, stem_channels, 3, 2, norm=norm, act=act)
        self.feature_info: list[dict[str, Any]] = [dict(num_chs=stem_channels, reduction=2, module="stem")]
        stages, channels, reduction = [], stem_channels, 2
        for i, ((n, c), kw) in enumerate(zip(stage_defs, per_stage)):
            down = kw.pop("down_channels", c)
            stages.append(stage_fn(channels, c, n, stride=2, down_channels=down, norm=norm, act=act, **kw))
            channels, reduction = c, reduction * 2
            self.feature_info.append(dict(num_chs=c, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        self.sppf: nn.Module = (SPPF(channels, channels, sppf_kernel, norm=norm, act=act, **(sppf_options or {}))
                                if sppf else nn.Identity())
        if isinstance(psa_blocks, bool) or not isinstance(psa_blocks, int) or psa_blocks < 0:
            raise ValueError(f"psa_blocks must be an integer >= 0, got {psa_blocks!r}")
        self.psa: nn.Module = C2PSA(channels, psa_blocks, norm=norm, act=act) if psa_blocks else nn.Identity()
        n_info = len(self.feature_info)
        self.out_indices = tuple(range(max(0, n_info - 3), n_info)) if out_indices is None else tuple(out_indices)
        if not self.out_indices or any(not 0 <= i < n_info for i in self.out_indices):
            raise ValueError(f"out_indices must index feature_info (0..{n_info - 1}), got {self.out_indices}")

    @property
    def out_channels(self) -> list[int]:
        return [self.feature_info[i]["num_chs"] for i in self.out_indices]

    @property
    def out_strides(self) -> list[int]:
        return [self.feature_info[i]["reduction"] for i in self.out_indices]

    @property
    def spec(self) -> BackboneSpec:
        """This backbone as data (``kind="c2fnet"``): a stage's ``block_fn`` becomes its ``StageSpec.block``."""
        a = self._spec_args
        kwargs = a["stage_kwargs"]
        per_stage = [dict(kwargs or {}) for _ in a["stage_defs"]] if kwargs is None or isinstance(kwargs, Mapping) \
            else [dict(k) for k in kwargs]
        stages = []
        for i, ((n, c), kw) in enumerate(zip(a["stage_defs"], per_stage)):
            block = kw.pop("block_fn", None)
            stages.append(StageSpec(int(n), int(c), "" if block is None else BLOCKS.name_of(block), True,
                                    plain_data(kw, f"stage_kwargs[{i}]")))
        options: dict[str, Any] = dict(stage=STAGES.name_of(a["stage_fn"]), sppf=bool(a["sppf"]),
                                       sppf_kernel=int(a["sppf_kernel"]))
        if a["sppf_options"]:  # recorded only when used, so the YOLOv8 specs stay as they were
            options["sppf_options"] = plain_data(a["sppf_options"], "sppf_options")
        if a["psa_blocks"]:
            options["psa_blocks"] = int(a["psa_blocks"])
        return BackboneSpec(
            stages=tuple(stages), kind="c2fnet", in_channels=a["in_channels"], stem_channels=a["stem_channels"],
            stem_type="conv", norm=NORMS.name_of(a["norm"]), act=ACTIVATIONS.name_of(a["act"]), num_classes=0,
            features_only=True, out_indices=None if a["out_indices"] is None else tuple(a["out_indices"]),
            weight_init="torch", options=options,
        )

    @classmethod
    def from_spec(cls, spec: BackboneSpec) -> C2fNet:
        """Build the backbone a ``kind="c2fnet"`` spec describes (``StageSpec.block``, when set, is the stage's
        ``block_fn``; an empty name lets the stage class pick its own block)."""
        if spec.kind != "c2fnet":
            raise ValueError(f"C2fNet.from_spec: backbone kind {spec.kind!r} is not 'c2fnet'")
        unknown = set(spec.options) - {"stage", "sppf", "sppf_kernel", "sppf_options", "psa_blocks"}
        if unknown:
            raise ValueError(f"C2fNet.from_spec: unknown option(s) {sorted(unknown)}")
        stage_kwargs = [dict(s.options, **({"block_fn": BLOCKS.get(s.block)} if s.block else {})) for s in spec.stages]
        return cls([(s.num_blocks, s.out_channels) for s in spec.stages], spec.stem_channels,
                   stage_fn=STAGES.get(spec.options.get("stage", "c2f")), stage_kwargs=stage_kwargs,
                   sppf=spec.options.get("sppf", True), sppf_kernel=spec.options.get("sppf_kernel", 5),
                   sppf_options=spec.options.get("sppf_options"), psa_blocks=spec.options.get("psa_blocks", 0),
                   out_indices=spec.out_indices, in_channels=spec.in_channels, norm=NORMS.get(spec.norm),
                   act=ACTIVATIONS.get(spec.act))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            y = stage(feats[-1])
            feats.append(self.psa(self.sppf(y)) if i == last else y)
        return [feats[i] for i in self.out_indices]


BACKBONE_KINDS.register("c2fnet", C2fNet)
