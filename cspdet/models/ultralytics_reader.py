"""Read an Ultralytics checkpoint safely: tensors and plain data out of a pickle of Ultralytics' classes, no
code run.

An Ultralytics ``.pt`` is a ``torch.save`` archive whose pickle names Ultralytics' own classes
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

This module never imports Ultralytics and contains none of its code. The conversion to cspdet's layout is
:mod:`cspdet.models.ultralytics_weights`.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import types
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["ULTRALYTICS_LICENCE", "UltralyticsCheckpoint", "UltralyticsWeightsError", "is_ultralytics_checkpoint",
           "read_ultralytics_file"]

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
        # weights_only=False only because torch refuses a custom pickle_module with weights_only=True: the
        # restricted unpickler above is the safety here (it imports nothing, refuses every global it does not know)
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
