"""Turn Ultralytics YOLOv8 / YOLO11 / YOLO26 detection checkpoints into cspdet detectors.

**Reading** is :mod:`cspdet.models.ultralytics_reader` (a restricted unpickler: tensors and plain data only,
anything else refused with one line).

**Converting.** The family comes from the weights (YOLOv8: C2f stages; YOLO11: C3k2 + C2PSA; YOLO26: YOLO11's
plus the attention block in the last neck stage and direct box regression), the size from the tensor shapes
(checked against the model yaml's scale when the file has one), the number of classes from the class conv.
Name correspondence (Ultralytics -> cspdet; ``b`` = 10 for YOLOv8, 11 for YOLO11 / YOLO26)::

    model.0                    -> backbone.stem                  (weight / 255: cspdet takes 0..255 input)
    model.{1,3,5,7}            -> backbone.stages.{0..3}.down
    model.{2,4,6,8}            -> backbone.stages.{0..3}         <c2f>
    model.9                    -> backbone.sppf                  cv1 / cv2 -> conv1 / conv2
    model.10 (YOLO11 / 26)     -> backbone.psa                   <c2f>
    model.{b+2, b+5}           -> neck.top_down_stages.{1, 0}    <c2f>
    model.{b+6, b+9}           -> neck.down_convs.{0, 1}
    model.{b+8, b+11}          -> neck.bottom_up_stages.{0, 1}   <c2f>
    model.{b+12}.cv2.{i}.{0,1,2}      -> head.levels.{i}.box_convs.{0,1} / box_pred  (one2one_cv2 -> o2o_levels)
    model.{b+12}.cv3.{i}.{0,1}[.0/.1] -> head.levels.{i}.cls_convs.{0,1}[.dconv/.pconv], cv3.{i}.2 -> cls_pred
    model.{b+12}.dfl.conv.weight      -> head.dfl_project
    <c2f>: cv1 -> expand, cv2 -> fuse, m.{j} -> blocks.{j} with, inside a block,
           Bottleneck cv1 / cv2 -> conv1 / conv2; C3k cv1 + cv2 -> expand (concatenated, cv1 first), cv3 -> fuse,
           m.{k} -> blocks.{k}; PSABlock attn.* / ffn.* unchanged

Where Ultralytics versions built the same name differently, the file decides: the first conv of SPPF is linear
in YOLO26 and (Ultralytics 8.4) in any model made from a yaml row that asks for it; the converter reads the
activation class the file holds (placeholder tree) and records it in the spec (``sppf_options.conv1_act``).
YOLO26's box outputs are raw distances (no softplus): its spec sets the head's ``distance_act="identity"``.
``csptal_<size>`` starts from YOLOv8 weights of its size, its one-to-one branch a copy of the one-to-many one.

This module never imports Ultralytics and contains none of its code; converted weights keep the licence of their
source (:data:`ULTRALYTICS_LICENCE`).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .ultralytics_reader import (
    ULTRALYTICS_LICENCE,
    UltralyticsCheckpoint,
    UltralyticsWeightsError,
    is_ultralytics_checkpoint,
    read_ultralytics_file,
)

__all__ = [
    "ULTRALYTICS_LICENCE", "UltralyticsCheckpoint", "UltralyticsWeightsError", "convert_ultralytics",
    "is_ultralytics_checkpoint", "read_ultralytics_checkpoint", "read_ultralytics_file",
    "ultralytics_to_cspdet_state_dict",
]


# ------------------------------------------------------------------------------------------ names


_BLOCK = re.compile(r"m\.(\d+)\.(.*)")
_HEAD = re.compile(r"(one2one_)?(cv2|cv3)\.(\d+)\.(.*)")


def _c2f_rest(rest: str, layer: str, c3k: set[str]) -> tuple[str | None, int | None]:
    """cspdet name (and C3k expand half) of ``rest`` inside the C2f / C3k2 / C2PSA layer ``layer`` (``model.6.``);
    ``c3k`` holds the prefixes of C3k blocks (``model.6.m.0.``)."""
    for ultra, ours in (("cv1.", "expand."), ("cv2.", "fuse.")):
        if rest.startswith(ultra):
            return ours + rest[len(ultra):], None
    match = _BLOCK.match(rest)
    if not match:
        return None, None
    j, inner = match.groups()
    out = f"blocks.{j}."
    if f"{layer}m.{j}." in c3k:  # a C3k block: two parallel 1x1 convs stacked into one expand conv
        for ultra, ours, half in (("cv1.", "expand.", 0), ("cv2.", "expand.", 1), ("cv3.", "fuse.", None)):
            if inner.startswith(ultra):
                return out + ours + inner[len(ultra):], half
        sub = _BLOCK.match(inner)
        if sub:
            return out + f"blocks.{sub.group(1)}." + _bottleneck(sub.group(2)), None
        return None, None
    if inner.startswith(("attn.", "ffn.")):  # PSABlock
        return out + inner, None
    if inner[:2] in ("0.", "1."):  # YOLO26's attention block: Sequential(Bottleneck, PSABlock)
        return out + inner[:2] + (_bottleneck(inner[2:]) if inner[0] == "0" else inner[2:]), None
    return out + _bottleneck(inner), None


def _bottleneck(rest: str) -> str:
    return re.sub(r"^cv([12])\.", r"conv\1.", rest)


def _head_rest(rest: str) -> str | None:
    if rest.startswith("dfl."):
        return "dfl_project" if rest == "dfl.conv.weight" else None
    match = _HEAD.match(rest)
    if not match:
        return None
    o2o, branch, level, inner = match.groups()
    out = f"{'o2o_levels' if o2o else 'levels'}.{level}."
    if branch == "cv2":
        parts = inner.split(".", 1)
        if parts[0] in ("0", "1"):
            return f"{out}box_convs.{inner}"
        return f"{out}box_pred.{parts[1]}" if parts[0] == "2" else None
    parts = inner.split(".", 2)
    if parts[0] == "2":
        return f"{out}cls_pred.{inner[2:]}"
    if parts[0] in ("0", "1") and parts[1] in ("0", "1") and len(parts) == 3:  # DWConv + Conv (YOLO11 / YOLO26)
        return f"{out}cls_convs.{parts[0]}.{'dconv' if parts[1] == '0' else 'pconv'}.{parts[2]}"
    if parts[0] in ("0", "1"):  # two Convs (YOLOv8)
        return f"{out}cls_convs.{inner}"
    return None


def _roles(offset: int) -> dict[int, tuple[str, str]]:
    """Ultralytics layer index -> (cspdet prefix, kind) for a model whose backbone has ``offset`` layers."""
    roles = {0: ("backbone.stem.", "conv"), 9: ("backbone.sppf.", "sppf")}
    for k in range(4):
        roles[1 + 2 * k] = (f"backbone.stages.{k}.down.", "conv")
        roles[2 + 2 * k] = (f"backbone.stages.{k}.", "c2f")
    if offset == 11:
        roles[10] = ("backbone.psa.", "c2f")
    roles.update({offset + 2: ("neck.top_down_stages.1.", "c2f"), offset + 5: ("neck.top_down_stages.0.", "c2f"),
                  offset + 6: ("neck.down_convs.0.", "conv"), offset + 8: ("neck.bottom_up_stages.0.", "c2f"),
                  offset + 9: ("neck.down_convs.1.", "conv"), offset + 11: ("neck.bottom_up_stages.1.", "c2f"),
                  offset + 12: ("head.", "head")})
    return roles


def _layer_indices(state: Mapping[str, Tensor]) -> list[int]:
    return sorted({int(k.split(".")[1]) for k in state if re.match(r"model\.\d+\.", k)})


def ultralytics_to_cspdet_state_dict(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename an Ultralytics YOLOv8 / YOLO11 / YOLO26 detection state dict into cspdet's layout.

    Returns:
        (cspdet state dict, Ultralytics keys that have no place in it). The stem conv is divided by 255 (cspdet
        models take 0..255 input, Ultralytics' 0..1); C3k's ``cv1`` / ``cv2`` are concatenated into ``expand``.
    """
    indices = _layer_indices(state)
    if not indices:
        raise UltralyticsWeightsError("not an Ultralytics detection state dict (no 'model.<index>.' keys)")
    offset = indices[-1] - 12  # the Detect layer is 12 after the backbone
    roles = _roles(offset)
    # C3k blocks are the only blocks with a cv3: model.<L>.m.<j>.cv3.conv.weight
    c3k = {k[: -len("cv3.conv.weight")] for k in state if re.fullmatch(r"model\.\d+\.m\.\d+\.cv3\.conv\.weight", k)}
    out: dict[str, Tensor] = {}
    halves: dict[str, dict[int, Tensor]] = {}
    unplaced: list[str] = []
    for key, value in state.items():
        match = re.match(r"model\.(\d+)\.(.*)", key)
        role = roles.get(int(match.group(1))) if match else None
        if role is None:
            unplaced.append(key)
            continue
        prefix, kind = role
        rest = match.group(2)
        half = None
        if kind == "conv":
            new = rest
        elif kind == "sppf":
            new = _bottleneck(rest)
        elif kind == "head":
            new = _head_rest(rest)
            if new == "dfl_project":
                value = value.reshape(-1)
        else:
            new, half = _c2f_rest(rest, f"model.{match.group(1)}.", c3k)
        if new is None:
            unplaced.append(key)
            continue
        if half is None:
            out[prefix + new] = value
        else:
            halves.setdefault(prefix + new, {})[half] = value
    for key, parts in halves.items():
        if set(parts) != {0, 1}:
            unplaced.append(f"{key} (only one of C3k's cv1 / cv2)")
        else:
            out[key] = parts[0] if key.endswith("num_batches_tracked") else torch.cat([parts[0], parts[1]], 0)
    stem = "backbone.stem.conv.weight"
    if stem in out:
        out[stem] = out[stem] / 255.0
    return out, unplaced


# ------------------------------------------------------------------------------------------ layout


def _family(state: Mapping[str, Tensor], offset: int) -> str:
    if offset == 10:
        return "yolov8"
    head = f"model.{offset + 12}."
    box = state.get(f"{head}cv2.0.2.weight", state.get(f"{head}one2one_cv2.0.2.weight"))
    last = f"model.{offset + 11}.m.0.1.attn.qkv.conv.weight"
    if last in state or (box is not None and box.shape[0] == 4):
        return "yolo26"
    return "yolo11"


#: Conv units that are linear in every layout (attention projections, the FFN's second conv).
_LINEAR_UNITS = re.compile(r"\.attn\.(qkv|proj|pe)\.act$|\.ffn\.1\.act$")


def _activation(ckpt: UltralyticsCheckpoint, path: str) -> bool | None:
    """Whether the file's SPPF first conv has an activation (None: the file does not say)."""
    qual = ckpt.modules.get(path)
    if qual is None:
        return None
    return not qual.endswith((".Identity",))


def read_ultralytics_checkpoint(path: str | Path, name: str | None = None) -> tuple[Any, dict[str, Any],
                                                                                    dict[str, Tensor]]:
    """An Ultralytics detection checkpoint as cspdet (spec, meta, state dict), without Ultralytics.

    Args:
        path: an Ultralytics ``.pt`` (or a plain state dict with Ultralytics' names).
        name: the cspdet preset to build; default the matching ``yolov8<s>_layout`` / ``yolo11<s>_layout`` /
            ``yolo26<s>_layout``. ``csptal_<s>`` takes YOLOv8 weights of its size (one-to-one branch copied from
            the one-to-many one).

    Returns:
        (:class:`~cspdet.models.DetectorSpec`, meta dict (:class:`~cspdet.models.DetectorMeta` fields, ``source`` a
        dict with file, format, version, licence), cspdet state dict that loads strictly into the spec's model).

    Raises:
        UltralyticsWeightsError: unsafe or unreadable file, or weights no cspdet layout fits (one line).
    """
    from ..coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
    from .detector import Detector
    from .presets import DETECTORS, FAMILIES, detector_spec
    from .spec import DetectorMeta
    from .yolo11_layout import YOLO11_SIZES
    from .yolov8_layout import YOLOV8_SIZES

    ckpt = read_ultralytics_file(path)
    state = ckpt.state_dict
    indices = _layer_indices(state)
    if not indices or indices[-1] - 12 not in (10, 11):
        raise UltralyticsWeightsError(f"{path}: not a YOLOv8 / YOLO11 / YOLO26 detection model (its layers end at "
                                      f"index {indices[-1] if indices else None}, expected 22 or 23)")
    offset = indices[-1] - 12
    family = _family(state, offset)
    head = f"model.{offset + 12}."
    cls_key = next((k for k in (f"{head}cv3.0.2.weight", f"{head}one2one_cv3.0.2.weight") if k in state), None)
    box_key = next((k for k in (f"{head}cv2.0.2.weight", f"{head}one2one_cv2.0.2.weight") if k in state), None)
    if cls_key is None or box_key is None:
        raise UltralyticsWeightsError(f"{path}: no Detect head tensors ({head}cv2 / cv3) in the file")
    num_classes, reg_max = int(state[cls_key].shape[0]), int(state[box_key].shape[0]) // 4
    one2one = any(k.startswith(f"{head}one2one_") for k in state)
    if any(k.startswith(f"{head}cv2.") for k in state) is False:
        raise UltralyticsWeightsError(f"{path}: the one-to-many head was removed (a fused export); convert the "
                                      "checkpoint that training wrote")
    converted, unplaced = ultralytics_to_cspdet_state_dict(state)
    if unplaced:
        raise UltralyticsWeightsError(f"{path}: {len(unplaced)} tensors have no place in cspdet's {family} layout: "
                                      f"{', '.join(unplaced[:5])}")

    sizes = YOLOV8_SIZES if family == "yolov8" else YOLO11_SIZES
    scale = (ckpt.yaml or {}).get("scale")
    order = ([scale] if scale in sizes else []) + [s for s in sizes if s != scale]
    conv1_act = _activation(ckpt, "model.9.cv1.act")
    odd = sorted(f"{p} ({q.rsplit('.', 1)[-1]})" for p, q in ckpt.modules.items()
                 if p.endswith(".act") and p != "model.9.cv1.act" and not q.endswith(".SiLU")
                 and not (_LINEAR_UNITS.search(p) and q.endswith(".Identity")))
    if odd:
        raise UltralyticsWeightsError(f"{path}: conv units with an activation other than SiLU, which cspdet's "
                                      f"{family} layout does not have: {', '.join(odd[:5])}")
    default_conv1_act = family != "yolo26"
    head_options: dict[str, Any] = {}
    if family == "yolo26" and reg_max == 1:
        head_options["distance_act"] = "identity"
    shapes = {k: tuple(v.shape) for k, v in converted.items()}
    chosen = None
    for size in order:
        d, w, mc = sizes[size]
        params = dict(depth=d, width=w, max_channels=mc, reg_max=reg_max, one2one=one2one,
                      head_options=head_options or None)
        spec = FAMILIES.get(family)(num_classes, **params)
        if conv1_act is not None and conv1_act != default_conv1_act:
            options = dict(spec.backbone.options)
            options["sppf_options"] = {**options.get("sppf_options", {}), "conv1_act": conv1_act}
            spec = spec.replace(backbone=spec.backbone.replace(options=options))
        with torch.device("meta"):
            own = Detector.from_spec(spec).state_dict()
        if {k: tuple(v.shape) for k, v in own.items()} == shapes:
            chosen = size, spec
            break
    if chosen is None:
        raise UltralyticsWeightsError(f"{path}: {family} weights whose tensor shapes match none of the sizes "
                                      f"{', '.join(sizes)} (a custom yaml?); cspdet converts the published layouts")
    size, spec = chosen
    preset = f"{family}{size}_layout"
    if name is not None and name != preset:
        if name == f"csptal_{size}" and family == "yolov8":
            if one2one:
                raise UltralyticsWeightsError(f"{path}: already has a one-to-one branch")
            spec = detector_spec(name, num_classes)
            for key in [k for k in converted if k.startswith("head.levels.")]:
                converted["head.o2o_levels." + key[len("head.levels."):]] = converted[key].clone()
            if conv1_act is not None and conv1_act != default_conv1_act:
                options = dict(spec.backbone.options)
                options["sppf_options"] = {"conv1_act": conv1_act}
                spec = spec.replace(backbone=spec.backbone.replace(options=options))
            preset = name
        elif name in DETECTORS.names():
            hint = f"use --model {preset}" + (f" or csptal_{size}" if family == "yolov8" else "")
            raise UltralyticsWeightsError(f"{path}: these are {family}{size} weights, not {name}: {hint}")
        else:
            raise UltralyticsWeightsError(f"--model {name}: unknown preset; these are {family}{size} weights: use "
                                          f"{preset}")

    if ckpt.names is not None and len(ckpt.names) != num_classes:
        raise UltralyticsWeightsError(f"{path}: {len(ckpt.names)} class names for a head with {num_classes} classes")
    names = ckpt.names or (list(COCO_CLASSES) if num_classes == 80 else [str(i) for i in range(num_classes)])
    category_ids = list(COCO_CATEGORY_IDS) if names == list(COCO_CLASSES) else list(range(num_classes))
    img = ckpt.img_size or 640
    source = {"file": str(path), "format": "ultralytics", "version": ckpt.version, "licence": ULTRALYTICS_LICENCE,
              "weights": ckpt.weights_from, "yaml_file": (ckpt.yaml or {}).get("yaml_file")}
    meta = DetectorMeta(names, category_ids, img_size=(img, img), strides=tuple(spec.head.strides), iou=0.7,
                        preset=preset, source=source).to_dict()
    return spec, meta, converted


def convert_ultralytics(path: str | Path, name: str | None = None) -> dict[str, Any]:
    """A version-2 cspdet checkpoint dict (``spec``, ``meta``, ``model``) from an Ultralytics checkpoint; the
    weights are loaded strictly into the model the spec describes first (so a returned checkpoint always loads)."""
    from .detector import Detector

    spec, meta, state = read_ultralytics_checkpoint(path, name)
    model = Detector.from_spec(spec)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UltralyticsWeightsError(f"{path}: converted weights do not fit {meta['preset']} (missing: "
                                      f"{', '.join(missing[:5]) or 'none'}; unexpected: "
                                      f"{', '.join(unexpected[:5]) or 'none'})")
    return {"format": "cspdet", "version": 2, "kind": "detector", "spec": spec.to_dict(), "meta": meta,
            "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
