"""Read Ultralytics YOLOv8 / YOLO11 / YOLO26 detection checkpoints safely and turn them into cspdet detectors.

**Reading.** An Ultralytics ``.pt`` is a ``torch.save`` archive whose pickle names Ultralytics' own classes
(``ultralytics.nn.tasks.DetectionModel``, ``ultralytics.nn.modules.block.C2f``, ...). Unpickling it normally would
import those classes and run their code. :func:`read_ultralytics_file` instead unpickles with a restricted
unpickler that never imports anything it names:

* torch's tensor rebuild functions, ``collections.OrderedDict`` and a few builtin containers are the real ones;
* every known container class (the Ultralytics modules of detection models, torch's layers and containers,
  ``IterableSimpleNamespace``, numpy scalars / dtypes, paths) becomes an inert placeholder that only stores what
  the pickle hands it;
* anything else (``builtins.eval``, ``os.system``, ``posix.system``, ``subprocess.*``, an unknown class) is refused
  with one line naming it, and nothing of the file is used.

From the placeholders only tensors and plain data are taken: the parameters and buffers of the module tree (as a
state dict with Ultralytics' names, ``model.0.conv.weight``, converted from fp16 to fp32), the class names, the
model yaml dict, the strides, the activation class of each conv unit, and which entry held the weights
(``ema`` during training, ``model`` in final files). A plain state-dict file with Ultralytics' names works too.

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

import _compat_pickle
import pickle
import re
import types
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ULTRALYTICS_LICENCE", "UltralyticsCheckpoint", "UltralyticsWeightsError", "convert_ultralytics",
    "is_ultralytics_checkpoint", "read_ultralytics_checkpoint", "read_ultralytics_file",
    "ultralytics_to_cspdet_state_dict",
]

ULTRALYTICS_LICENCE = "AGPL-3.0 (Ultralytics weights keep the licence of their source)"


class UltralyticsWeightsError(ValueError):
    """An Ultralytics file that cannot be read safely or does not fit a cspdet layout (one line says why)."""


class _Refused(pickle.UnpicklingError):
    """Raised inside the unpickler when the pickle names something it may not (propagates out of torch.load)."""


# ------------------------------------------------------------------------------------------ the unpickler

#: Classes whose instances become inert placeholders: Ultralytics' detection-model containers and layers (current
#: and legacy module paths), torch's layers / containers, and the plain-data holders Ultralytics checkpoints carry.
_ULTRALYTICS_MODULES = ("ultralytics.nn.tasks", "ultralytics.nn.modules", "ultralytics.nn.modules.conv",
                        "ultralytics.nn.modules.block", "ultralytics.nn.modules.head",
                        "ultralytics.nn.modules.transformer", "ultralytics.utils", "ultralytics.utils.loss",
                        "ultralytics.utils.tal", "ultralytics.yolo.utils", "ultralytics.yolo.utils.loss",
                        "ultralytics.yolo.utils.tal")
_ULTRALYTICS_CLASSES = frozenset({
    "DetectionModel", "YOLOv10DetectionModel", "BaseModel",
    "Conv", "Conv2", "LightConv", "DWConv", "DWConvTranspose2d", "ConvTranspose", "Focus", "GhostConv", "RepConv",
    "Concat", "Index",
    "Bottleneck", "BottleneckCSP", "C1", "C2", "C2f", "C3", "C3x", "C3k", "C3k2", "C2PSA", "C2fPSA", "PSA",
    "PSABlock", "Attention", "SPP", "SPPF", "SPPELAN", "DFL", "Proto", "Silence", "RepNCSPELAN4", "ELAN1",
    "ADown", "AConv", "CBLinear", "CBFuse", "RepC3", "RepBottleneck", "RepCSP", "C2fCIB", "CIB", "SCDown", "A2C2f",
    "ABlock", "AAttn", "ResNetBlock", "ResNetLayer",
    "Detect", "v10Detect",
    "IterableSimpleNamespace",
    "v8DetectionLoss", "E2EDetectLoss", "E2ELoss", "v10DetectLoss", "BboxLoss", "DFLoss", "TaskAlignedAssigner",
})
_TORCH_LAYER_MODULES = ("torch.nn.modules.conv", "torch.nn.modules.batchnorm", "torch.nn.modules.activation",
                        "torch.nn.modules.container", "torch.nn.modules.pooling", "torch.nn.modules.upsampling",
                        "torch.nn.modules.linear", "torch.nn.modules.dropout", "torch.nn.modules.loss",
                        "torch.nn.modules.flatten", "torch.nn.modules.padding")
_TORCH_LAYER_CLASSES = frozenset({
    "Conv2d", "ConvTranspose2d", "BatchNorm2d", "SiLU", "ReLU", "LeakyReLU", "Hardswish", "GELU", "Sigmoid",
    "Identity", "Sequential", "ModuleList", "ModuleDict", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    "Upsample", "Linear", "Dropout", "BCEWithLogitsLoss", "Flatten", "ZeroPad2d",
})
_DATA_CLASSES = {
    "types": {"SimpleNamespace"}, "argparse": {"Namespace"},
    "pathlib": {"PosixPath", "WindowsPath", "Path", "PurePosixPath", "PureWindowsPath"},
    "pathlib._local": {"PosixPath", "WindowsPath", "Path"},
    "numpy": {"dtype", "ndarray"}, "numpy.dtypes": {"Float64DType", "Float32DType", "Int64DType"},
    "datetime": {"datetime", "date", "timedelta", "timezone"},
}
#: Real objects the pickle may name: torch's tensor rebuilders and plain containers (no code of the file runs).
_REAL = {
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "list"): list,
    ("builtins", "dict"): dict, ("builtins", "tuple"): tuple, ("builtins", "slice"): slice,
    ("builtins", "complex"): complex, ("builtins", "bytearray"): bytearray,
    ("torch", "Size"): torch.Size, ("torch", "device"): torch.device,
}
_COMPAT = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _Inert:
    """A placeholder for a pickled object of a known class: it stores the constructor arguments and the state the
    pickle hands it, and has no behaviour. ``_qualname`` is the class the pickle named."""

    _qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        obj = object.__new__(cls)
        obj.__dict__.update(_args=args, _state=None)
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<inert {self._qualname}>"


_PLACEHOLDERS: dict[str, type] = {}


def _placeholder(qualname: str) -> type:
    """The (cached) inert class standing for ``qualname``."""
    if qualname not in _PLACEHOLDERS:
        _PLACEHOLDERS[qualname] = type(qualname.rsplit(".", 1)[-1], (_Inert,), {"_qualname": qualname})
    return _PLACEHOLDERS[qualname]


def _numpy_scalar(*args: Any) -> _Inert:
    """numpy's scalar reconstructor, replaced: the value is not needed, only the knowledge that it is data."""
    return _placeholder("numpy.core.multiarray.scalar")(*args)


def _allowed(module: str, name: str) -> Any:
    module = _COMPAT.get(module, module)
    if (module, name) in _REAL:
        return _REAL[(module, name)]
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
        return _numpy_scalar
    known = ((module in _ULTRALYTICS_MODULES and name in _ULTRALYTICS_CLASSES)
             or (module in _TORCH_LAYER_MODULES and name in _TORCH_LAYER_CLASSES)
             or name in _DATA_CLASSES.get(module, ()))
    return _placeholder(f"{module}.{name}") if known else None


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves names only through :func:`_allowed` (nothing is imported)."""

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles spell some names the Python 2 way (subprocess.Popen as commands.Popen): read them as
        # Python 3 names, as pickle itself does, so the check and the message see the real name.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        obj = _allowed(module, name)
        if obj is None:
            raise _Refused(f"{module}.{name}")
        return obj


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


#: The ``pickle_module`` handed to ``torch.load``: torch's zip reader, our unpickler.
_PICKLE_MODULE = types.SimpleNamespace(Unpickler=_RestrictedUnpickler, load=_restricted_load,
                                       UnpicklingError=pickle.UnpicklingError, __name__="cspdet_restricted_pickle")


# ------------------------------------------------------------------------------------------ reading


@dataclass
class UltralyticsCheckpoint:
    """What :func:`read_ultralytics_file` takes from a file: tensors and plain data only."""

    state_dict: dict[str, Tensor]
    """fp32 (floating tensors) state dict with Ultralytics' names (``model.0.conv.weight``)."""
    names: list[str] | None = None
    yaml: dict[str, Any] | None = None
    stride: list[int] | None = None
    version: str | None = None
    weights_from: str = "state_dict"
    """``"ema"``, ``"model"`` (which checkpoint entry held the module) or ``"state_dict"`` (a plain state dict)."""
    modules: dict[str, str] = field(default_factory=dict)
    """module path (``model.9.cv1.act``) -> class the file named (``torch.nn.modules.linear.Identity``)."""
    img_size: int | None = None


def _zip_pickle(path: Path) -> bytes | None:
    """The main pickle of a torch zip archive (``<name>/data.pkl``), or None for another kind of file."""
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
            return zf.read(pkl[0]) if pkl else None
    except (zipfile.BadZipFile, OSError, KeyError):
        return None


def is_ultralytics_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a torch archive whose pickle names Ultralytics classes (read as bytes, not run)."""
    path = Path(path)
    if not path.is_file():
        return False
    raw = _zip_pickle(path)
    if raw is None:
        with open(path, "rb") as fh:
            raw = fh.read(1 << 20) if fh.read(1) == b"\x80" else b""
    return b"ultralytics.nn." in raw or b"ultralytics.yolo." in raw


def _is_plain(value: Any, depth: int = 0) -> bool:
    if depth > 20:
        return False
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _state(node: Any) -> dict[str, Any]:
    state = node._state if isinstance(node, _Inert) else None
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict, slots) form
        state = {**(state[0] or {}), **state[1]}
    return state if isinstance(state, dict) else {}


def _walk(node: Any, prefix: str, out: dict[str, Tensor], modules: dict[str, str], where: str,
          seen: set[int] | None = None) -> None:
    """Collect the parameters and persistent buffers of a placeholder module tree into ``out``. ``seen`` holds the
    ancestors of ``node`` (a module may be shared -- Ultralytics' conv units share one activation instance -- but
    may not contain itself)."""
    seen = set() if seen is None else seen
    if id(node) in seen or prefix.count(".") > 64:
        raise UltralyticsWeightsError(f"{where}: the module tree loops or nests too deep at {prefix.rstrip('.')}")
    seen.add(id(node))
    try:
        _walk_node(node, prefix, out, modules, where, seen)
    finally:
        seen.discard(id(node))


def _walk_node(node: Any, prefix: str, out: dict[str, Tensor], modules: dict[str, str], where: str,
               seen: set[int]) -> None:
    if not isinstance(node, _Inert):
        raise UltralyticsWeightsError(f"{where}: module {prefix.rstrip('.') or '<root>'} is a "
                                      f"{type(node).__name__}, not a module of a known class")
    modules[prefix.rstrip(".")] = node._qualname
    state = _state(node)
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(value, Tensor):
                raise UltralyticsWeightsError(f"{where}: {prefix}{name} is a {type(value).__name__}, not a tensor")
            out[prefix + name] = value.detach().float() if value.is_floating_point() else value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _walk(child, f"{prefix}{name}.", out, modules, where, seen)


def read_ultralytics_file(path: str | Path) -> UltralyticsCheckpoint:
    """Read an Ultralytics checkpoint (or a plain Ultralytics-named state dict) without running any of its code.

    Raises:
        UltralyticsWeightsError: a pickle that names anything outside the known classes (one line naming it), a
            TorchScript archive, an unreadable file, or a file with no detection model in it.
    """
    path = Path(path)
    if not path.is_file():
        raise UltralyticsWeightsError(f"{path}: file not found")
    raw = _zip_pickle(path)
    if raw is not None:
        with zipfile.ZipFile(path) as zf:
            if any(n.endswith("/constants.pkl") for n in zf.namelist()):
                raise UltralyticsWeightsError(f"{path}: a TorchScript archive, not an Ultralytics checkpoint; "
                                              "give the .pt file that training wrote")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PICKLE_MODULE)
    except _Refused as err:
        raise UltralyticsWeightsError(
            f"{path}: refused: the file names {err}, which a weights file does not need (loading it could run "
            f"code); nothing of it was used") from None
    except Exception as err:  # truncated / corrupt archives
        reason = " ".join(str(err).split())[:200]
        raise UltralyticsWeightsError(f"{path}: cannot read the checkpoint: {type(err).__name__}: {reason}") from None
    where = str(path)
    if isinstance(obj, Mapping) and all(isinstance(v, Tensor) for v in obj.values()) and obj:
        state = {k: v.float() if v.is_floating_point() else v for k, v in obj.items()}
        return UltralyticsCheckpoint(state_dict=state)
    if not isinstance(obj, Mapping):
        raise UltralyticsWeightsError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    weights_from = "ema" if obj.get("ema") is not None else "model"
    root = obj.get(weights_from)
    if isinstance(root, Mapping) and root and all(isinstance(v, Tensor) for v in root.values()):
        state = {k: v.float() if v.is_floating_point() else v for k, v in root.items()}
        return UltralyticsCheckpoint(state_dict=state, weights_from=weights_from)
    if not isinstance(root, _Inert) or not root._qualname.endswith("DetectionModel"):
        what = root._qualname if isinstance(root, _Inert) else type(root).__name__
        raise UltralyticsWeightsError(f"{path}: its '{weights_from}' entry is a {what}, not a detection model "
                                      "(only Ultralytics detection checkpoints convert)")
    state_dict: dict[str, Tensor] = {}
    modules: dict[str, str] = {}
    try:
        _walk(root, "", state_dict, modules, where)
    except (AttributeError, TypeError, ValueError) as err:  # a tree whose containers are not what modules hold
        if isinstance(err, UltralyticsWeightsError):
            raise
        raise UltralyticsWeightsError(f"{where}: not a module tree of tensors: {type(err).__name__}: {err}") from None
    attrs = _state(root)
    yaml = attrs.get("yaml") if _is_plain(attrs.get("yaml")) and isinstance(attrs.get("yaml"), dict) else None
    names = attrs.get("names")
    if isinstance(names, dict) and _is_plain(names):
        names = [str(names[k]) for k in sorted(names)]
    elif isinstance(names, (list, tuple)) and _is_plain(names):
        names = [str(n) for n in names]
    else:
        names = None
    stride = attrs.get("stride")
    stride = [int(s) for s in stride.tolist()] if isinstance(stride, Tensor) else None
    version = obj.get("version") if isinstance(obj.get("version"), str) else None
    train_args = obj.get("train_args")
    imgsz = train_args.get("imgsz") if isinstance(train_args, dict) else None
    return UltralyticsCheckpoint(state_dict=state_dict, names=names, yaml=yaml, stride=stride, version=version,
                                 weights_from=weights_from, modules=modules,
                                 img_size=imgsz if isinstance(imgsz, int) and imgsz > 0 else None)


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
