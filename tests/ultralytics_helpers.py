"""Hand-made Ultralytics-like checkpoints for the tests, without Ultralytics: a cspdet model's weights renamed to
Ultralytics' layer names (an independent, inverse spelling of the mapping in ``cspdet.models.ultralytics_weights``),
pickled as a tree of fake classes that carry Ultralytics' module paths. The fake modules exist in ``sys.modules``
only while pickling."""

from __future__ import annotations

import contextlib
import re
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import Tensor, nn

_FAKE_PATHS = {"ultralytics": None, "ultralytics.nn": None, "ultralytics.nn.tasks": "DetectionModel",
               "ultralytics.nn.modules": None, "ultralytics.nn.modules.conv": "Conv"}


class _FakeNode:
    """A pickled module of the fake tree: its __dict__ looks like an nn.Module's."""

    def __init__(self) -> None:
        self._parameters: OrderedDict = OrderedDict()
        self._buffers: OrderedDict = OrderedDict()
        self._non_persistent_buffers_set: set = set()
        self._modules: OrderedDict = OrderedDict()
        self.training = False


@contextlib.contextmanager
def fake_ultralytics() -> Iterator[dict[str, type]]:
    """Register fake ``ultralytics.nn.tasks.DetectionModel`` / ``ultralytics.nn.modules.conv.Conv`` classes (and
    ``ultralytics.nn.modules.block.Evil``) in ``sys.modules`` for the duration of the block."""
    classes = {}
    saved = {name: sys.modules.get(name) for name in [*_FAKE_PATHS, "ultralytics.nn.modules.block"]}
    try:
        for path, cls_name in [*_FAKE_PATHS.items(), ("ultralytics.nn.modules.block", "Evil")]:
            module = types.ModuleType(path)
            if cls_name:
                cls = type(cls_name, (_FakeNode,), {"__module__": path})
                setattr(module, cls_name, cls)
                classes[cls_name] = cls
            sys.modules[path] = module
        yield classes
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def build_tree(state: dict[str, Tensor], classes: dict[str, type], acts: dict[str, nn.Module] | None = None):
    """A fake DetectionModel whose module tree holds ``state`` (Ultralytics names) as fp16, as Ultralytics saves;
    ``acts`` adds real torch activation modules at the given paths (``model.9.cv1.act``)."""
    root = classes["DetectionModel"]()
    for key, value in state.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            node = node._modules.setdefault(part, classes["Conv"]())
        value = value.half() if value.is_floating_point() else value
        if leaf in ("running_mean", "running_var", "num_batches_tracked"):
            node._buffers[leaf] = value
        else:
            node._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    for path, act in (acts or {}).items():
        *parents, leaf = path.split(".")
        node = root
        for part in parents:
            node = node._modules[part]
        node._modules[leaf] = act
    root.yaml = {"nc": 80, "scale": "n", "yaml_file": "fake.yaml"}
    root.names = {i: f"class{i}" for i in range(80)}
    root.stride = torch.tensor([8.0, 16.0, 32.0])
    return root


def _c2f_inverse(rest: str, state: dict[str, Tensor], prefix: str) -> list[tuple[str, Tensor | None, int | None]]:
    """Ultralytics names of ``rest`` inside a C2f-like cspdet stage (several for a C3k expand: its two halves)."""
    rest = re.sub(r"^expand\.", "cv1.", rest)
    rest = re.sub(r"^fuse\.", "cv2.", rest)
    match = re.match(r"blocks\.(\d+)\.(.*)", rest)
    if not match:
        return [(rest, None, None)]
    j, inner = match.groups()
    if any(k.startswith(f"{prefix}blocks.{j}.expand.") for k in state):  # C3k
        if inner.startswith("expand."):
            tail = inner[len("expand."):]
            return [(f"m.{j}.cv1.{tail}", None, 0), (f"m.{j}.cv2.{tail}", None, 1)]
        inner = re.sub(r"^fuse\.", "cv3.", inner)
        inner = re.sub(r"^blocks\.(\d+)\.conv([12])\.", r"m.\1.cv\2.", inner)
        return [(f"m.{j}.{inner}", None, None)]
    inner = re.sub(r"^(0\.)?conv([12])\.", lambda m: f"{m.group(1) or ''}cv{m.group(2)}.", inner)
    return [(f"m.{j}.{inner}", None, None)]


def to_ultralytics_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """cspdet YOLOv8 / YOLO11 / YOLO26 layout state dict -> the same tensors under Ultralytics' names (stem x 255)."""
    b = 11 if any(k.startswith("backbone.psa.") for k in state) else 10
    stage_index = {"backbone.sppf.": 9, "backbone.psa.": 10, "neck.top_down_stages.1.": b + 2,
                   "neck.top_down_stages.0.": b + 5, "neck.down_convs.0.": b + 6, "neck.bottom_up_stages.0.": b + 8,
                   "neck.down_convs.1.": b + 9, "neck.bottom_up_stages.1.": b + 11, "backbone.stem.": 0}
    for k in range(4):
        stage_index[f"backbone.stages.{k}.down."] = 1 + 2 * k
        stage_index[f"backbone.stages.{k}."] = 2 + 2 * k
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("head."):
            d = f"model.{b + 12}."
            if key == "head.dfl_project":
                out[d + "dfl.conv.weight"] = value.reshape(1, -1, 1, 1)
                continue
            m = re.match(r"head\.(o2o_)?levels\.(\d+)\.(box_convs|box_pred|cls_convs|cls_pred)\.(.*)", key)
            o2o, i, part, tail = m.groups()
            pre = f"{d}{'one2one_' if o2o else ''}"
            if part == "box_convs":
                out[f"{pre}cv2.{i}.{tail}"] = value
            elif part == "box_pred":
                out[f"{pre}cv2.{i}.2.{tail}"] = value
            elif part == "cls_pred":
                out[f"{pre}cv3.{i}.2.{tail}"] = value
            else:
                tail = re.sub(r"^(\d)\.dconv\.", r"\1.0.", tail)
                tail = re.sub(r"^(\d)\.pconv\.", r"\1.1.", tail)
                out[f"{pre}cv3.{i}.{tail}"] = value
            continue
        prefix = max((p for p in stage_index if key.startswith(p)), key=len)
        rest = key[len(prefix):]
        index = stage_index[prefix]
        if prefix == "backbone.stem.":
            out[f"model.0.{rest}"] = value * 255 if rest == "conv.weight" else value
        elif prefix.endswith("down.") or prefix.startswith("neck.down_convs"):
            out[f"model.{index}.{rest}"] = value
        elif prefix == "backbone.sppf.":
            out["model.9." + re.sub(r"^conv([12])", r"cv\1", rest)] = value
        else:
            for name, _, half in _c2f_inverse(rest, state, prefix):
                if half is None or key.endswith("num_batches_tracked"):
                    out[f"model.{index}.{name}"] = value
                else:
                    out[f"model.{index}.{name}"] = value.chunk(2, 0)[half]
    return out
