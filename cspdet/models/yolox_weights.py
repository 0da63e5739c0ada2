"""Load official YOLOX checkpoints (``YOLOX(YOLOPAFPN, YOLOXHead)`` state dicts) into cspdet detectors.

YOLOX-{Nano,Tiny,S,M,L,X} and ``create_detector("cspdarknet_{nano,...,x}")`` have the same layers; only the
names and two layouts differ:

* YOLOX's ``CSPLayer`` has two parallel 1x1 convs (``conv1`` feeds the bottlenecks, ``conv2`` is the shortcut);
  cspdet's :class:`~cspdet.models.CSPStage` has one 1x1 ``expand`` conv whose output is split, so the two
  weights (and BN tensors) are concatenated along the output channels, ``conv1`` first (``blocks_first``).
* YOLOX models take BGR images, cspdet models RGB: the input channels of the stem conv (after Focus's
  space-to-depth, 4 groups of 3) are reversed within each group, so RGB input reproduces YOLOX's BGR result.

Key correspondence (YOLOX -> cspdet)::

    backbone.backbone.stem.*          -> backbone.stem.*
    backbone.backbone.dark{k}.0.*     -> backbone.stages.{k-2}.down.*        (k = 2..5)
    backbone.backbone.dark5.1.*       -> backbone.stages.3.spp.*
    backbone.backbone.dark{k}.1.*     -> backbone.stages.{k-2}.<csp>         (k = 2..4; dark5.2 for k = 5)
    backbone.lateral_conv0 / reduce_conv1 -> neck.lateral_convs.1 / .0
    backbone.C3_p4 / C3_p3            -> neck.top_down_stages.1 / .0  <csp>
    backbone.bu_conv2 / bu_conv1      -> neck.down_convs.0 / .1
    backbone.C3_n3 / C3_n4            -> neck.bottom_up_stages.0 / .1  <csp>
    head.stems.{i} / cls_convs.{i} / reg_convs.{i} -> head.levels.{i}.stem / cls_convs / reg_convs
    head.cls_preds.{i} / reg_preds.{i} / obj_preds.{i} -> head.levels.{i}.cls_pred / reg_pred / obj_pred
    <csp>: conv1 + conv2 -> expand, m.{j} -> blocks.{j}, conv3 -> fuse
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["YoloxWeightsError", "infer_yolox_preset", "load_yolox_weights", "yolox_to_cspdet_state_dict"]

_STEM_WEIGHT = "backbone.stem.conv.conv.weight"

# (YOLOX prefix pattern, cspdet prefix, is a CSP layer). Matched against the start of each key, first match wins.
_PREFIX_RULES: list[tuple[re.Pattern[str], str, bool]] = [
    (re.compile(r"backbone\.backbone\.stem\."), "backbone.stem.", False),
    (re.compile(r"backbone\.backbone\.dark5\.1\."), "backbone.stages.3.spp.", False),
    (re.compile(r"backbone\.backbone\.dark5\.2\."), "backbone.stages.3.", True),
    (re.compile(r"backbone\.backbone\.dark([2-5])\.0\."), "backbone.stages.{k}.down.", False),
    (re.compile(r"backbone\.backbone\.dark([2-4])\.1\."), "backbone.stages.{k}.", True),
    (re.compile(r"backbone\.lateral_conv0\."), "neck.lateral_convs.1.", False),
    (re.compile(r"backbone\.reduce_conv1\."), "neck.lateral_convs.0.", False),
    (re.compile(r"backbone\.C3_p4\."), "neck.top_down_stages.1.", True),
    (re.compile(r"backbone\.C3_p3\."), "neck.top_down_stages.0.", True),
    (re.compile(r"backbone\.bu_conv2\."), "neck.down_convs.0.", False),
    (re.compile(r"backbone\.bu_conv1\."), "neck.down_convs.1.", False),
    (re.compile(r"backbone\.C3_n3\."), "neck.bottom_up_stages.0.", True),
    (re.compile(r"backbone\.C3_n4\."), "neck.bottom_up_stages.1.", True),
    (re.compile(r"head\.stems\.(\d+)\."), "head.levels.{i}.stem.", False),
    (re.compile(r"head\.cls_convs\.(\d+)\."), "head.levels.{i}.cls_convs.", False),
    (re.compile(r"head\.reg_convs\.(\d+)\."), "head.levels.{i}.reg_convs.", False),
    (re.compile(r"head\.cls_preds\.(\d+)\."), "head.levels.{i}.cls_pred.", False),
    (re.compile(r"head\.reg_preds\.(\d+)\."), "head.levels.{i}.reg_pred.", False),
    (re.compile(r"head\.obj_preds\.(\d+)\."), "head.levels.{i}.obj_pred.", False),
]
_CSP_BLOCK = re.compile(r"m\.(\d+)\.")


class YoloxWeightsError(ValueError):
    """A YOLOX state dict that does not fit the detector (lists every offending key)."""


def _rename(key: str) -> tuple[str | None, int | None]:
    """cspdet key for a YOLOX key, and for halves of a CSP expand conv which half (0 = conv1, 1 = conv2)."""
    for pattern, target, is_csp in _PREFIX_RULES:
        match = pattern.match(key)
        if not match:
            continue
        if "{k}" in target:
            target = target.format(k=int(match.group(1)) - 2)
        elif "{i}" in target:
            target = target.format(i=int(match.group(1)))
        rest = key[match.end() :]
        if not is_csp:
            return target + rest, None
        if rest.startswith("conv1."):
            return target + "expand." + rest[len("conv1.") :], 0
        if rest.startswith("conv2."):
            return target + "expand." + rest[len("conv2.") :], 1
        if rest.startswith("conv3."):
            return target + "fuse." + rest[len("conv3.") :], None
        block = _CSP_BLOCK.match(rest)
        if block:
            return f"{target}blocks.{block.group(1)}.{rest[block.end():]}", None
        return None, None
    return None, None


def _bgr_to_rgb_stem(weight: Tensor) -> Tensor:
    """Reverse the colour order of the stem conv's input channels (groups of 3 after space-to-depth)."""
    if weight.dim() != 4 or weight.shape[1] % 3:
        raise YoloxWeightsError(
            f"{_STEM_WEIGHT}: expected a 4-D conv weight with a multiple of 3 input channels, "
            f"got shape {tuple(weight.shape)}"
        )
    index = torch.arange(weight.shape[1]).view(-1, 3).flip(1).flatten()
    return weight[:, index]


def yolox_to_cspdet_state_dict(
    state_dict: Mapping[str, Tensor], rgb_input: bool = True
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename / merge a YOLOX detector state dict into cspdet's layout.

    Args:
        state_dict: YOLOX ``model.state_dict()`` (or a checkpoint dict with a ``"model"`` entry; a DDP
            ``module.`` prefix is removed).
        rgb_input: permute the stem conv so the model takes RGB input (cspdet's convention).

    Returns:
        (cspdet state dict, YOLOX keys that have no place in cspdet's layout).
    """
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    out: dict[str, Tensor] = {}
    halves: dict[str, dict[int, Tensor]] = {}
    unplaced: list[str] = []
    for key, value in state_dict.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        new_key, half = _rename(key)
        if new_key is None:
            unplaced.append(key)
        elif half is None:
            out[new_key] = value
        else:
            halves.setdefault(new_key, {})[half] = value
    for key, parts in halves.items():
        if set(parts) != {0, 1}:
            unplaced.append(f"{key} (only one of conv1/conv2 present)")
        elif key.endswith("num_batches_tracked"):
            out[key] = parts[0]
        else:
            out[key] = torch.cat([parts[0], parts[1]], 0)
    if rgb_input and _STEM_WEIGHT in out:
        out[_STEM_WEIGHT] = _bgr_to_rgb_stem(out[_STEM_WEIGHT])
    return out, unplaced


def load_yolox_weights(detector: nn.Module, state_dict: Mapping[str, Tensor], rgb_input: bool = True) -> None:
    """Load an official YOLOX checkpoint into the matching ``create_detector("cspdarknet_<size>")`` detector.

    Strict: every YOLOX tensor must find its place with the right shape and every detector tensor must be
    filled, else :class:`YoloxWeightsError` lists the offending keys (and a hint when only the number of
    classes differs). After loading, ``detector.eval()(rgb)`` equals YOLOX's output on the BGR image.

    Args:
        detector: a cspdet :class:`~cspdet.models.Detector` built with a ``cspdarknet_*`` preset.
        state_dict: the ``"model"`` entry of a YOLOX ``.pth`` (the whole checkpoint dict is accepted too).
        rgb_input: convert the stem for RGB input (default, cspdet's convention); False keeps BGR.
    """
    converted, unplaced = yolox_to_cspdet_state_dict(state_dict, rgb_input=rgb_input)
    own = detector.state_dict()
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(converted)
        if converted[k].shape != own[k].shape
    )
    if unplaced or missing or unexpected or mismatched:
        lines = ["YOLOX state dict does not fit this detector:"]
        for title, keys in (
            ("YOLOX keys with no place in cspdet", unplaced),
            ("detector keys not in the checkpoint", missing),
            ("converted keys the detector lacks", unexpected),
            ("shape mismatches", mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:20]) + (f" ... (+{len(keys) - 20} more)" if len(keys) > 20 else "")
                lines.append(f"  {title} ({len(keys)}): {shown}")
        if any(".cls_pred." in m for m in mismatched):
            lines.append("  hint: the number of classes differs; build the detector with the checkpoint's classes")
        raise YoloxWeightsError("\n".join(lines))
    detector.load_state_dict(converted, strict=True)


def infer_yolox_preset(state_dict: Mapping[str, Tensor]) -> tuple[str, int]:
    """Which ``cspdarknet_<size>`` preset a YOLOX state dict belongs to, and its number of classes.

    Read from the weights alone: the stem width (``64 x width``), the number of bottlenecks in the first CSP
    stage (``3 x depth``) and whether the convolutions are depthwise (``dconv`` keys, YOLOX-Nano), each
    compared with the six presets of ``CSPDARKNET_SIZES``; the classes are the rows of ``head.cls_preds.0``.

    Args:
        state_dict: YOLOX ``model.state_dict()`` or a checkpoint dict with a ``"model"`` entry (a DDP
            ``module.`` prefix is accepted).

    Returns:
        (preset name such as ``"cspdarknet_s"``, number of classes).

    Raises:
        YoloxWeightsError: not YOLOX weights, or a size none of the presets has (the message gives the sizes).
    """
    from .backbones import CSPDARKNET_SIZES, cspdarknet_spec

    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    stem = state.get("backbone.backbone.stem.conv.conv.weight")
    cls = state.get("head.cls_preds.0.weight")
    if stem is None or cls is None:
        raise YoloxWeightsError("not a YOLOX detector state dict (no backbone.backbone.stem.conv.conv.weight or "
                                "head.cls_preds.0.weight)")
    width = int(stem.shape[0])
    blocks = {k.split(".")[5] for k in state if k.startswith("backbone.backbone.dark2.1.m.")}
    depthwise = any(".dconv." in k for k in state)
    for size, (depth_mul, width_mul, dw) in CSPDARKNET_SIZES.items():
        spec = cspdarknet_spec(depth_mul, width_mul, dw)
        if (spec.stem_channels, spec.stages[0].num_blocks, dw) == (width, len(blocks), depthwise):
            return f"cspdarknet_{size}", int(cls.shape[0])
    raise YoloxWeightsError(f"YOLOX weights with stem width {width}, {len(blocks)} blocks per first CSP stage"
                            f"{' and depthwise convolutions' if depthwise else ''} match none of YOLOX-"
                            f"{{{', '.join(CSPDARKNET_SIZES)}}}")
