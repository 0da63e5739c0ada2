"""Typed detection targets: one image's boxes (:class:`ImageTargets`) and a padded batch of them (:class:`Targets`).

The collate builds a :class:`Targets` from the samples' :class:`ImageTargets`; the trainer moves and rescales it
(:meth:`Targets.to`, :meth:`Targets.scaled`); the losses read its ``boxes``, ``labels`` and ``mask`` by name.
Nothing between the dataset and the loss knows a column layout, so a task that needs more per box (instance masks,
keypoints, track ids) adds an entry to ``extras`` instead of a column to every reader.

``extras`` holds per-box tensors by name, (N, ...) in an :class:`ImageTargets` and (B, M, ...) in a
:class:`Targets` (zero padded like the boxes). Every method carries them along: :meth:`Targets.collate` pads them,
:meth:`Targets.to` moves them, :meth:`Targets.per_image` cuts them. Geometry is the one thing a record must know
about an extra: :meth:`Targets.scaled` rescales the ``"keypoints"`` extra ((..., K, 2 or 3): x, y in input px
first, e.g. a visibility after) with the boxes; every other extra is carried unchanged (store masks at a
resolution of their own, e.g. per-box mask crops, not in input pixels).

The packed ``(B, M, 5)`` ``[class, x1, y1, x2, y2]`` float tensor with a separate (B, M) mask that earlier versions
passed around is converted by :meth:`Targets.from_packed` / :meth:`Targets.to_packed`, for old callers only.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = ["ImageTargets", "Targets", "as_targets"]

#: The extra that :meth:`Targets.scaled` rescales with the boxes: (..., K, 2+) x, y input px first.
KEYPOINTS = "keypoints"

A = TypeVar("A", np.ndarray, Tensor)


@dataclass(frozen=True, eq=False)
class ImageTargets(Generic[A]):
    """The targets of one image, as numpy arrays (datasets, transforms) or tensors (:meth:`Targets.per_image`).

    Attributes:
        boxes: (N, 4) float32 xyxy pixels of the image they belong to.
        labels: (N,) int64 class indices.
        extras: per-box arrays by name, each (N, ...) (see the module docstring).
    """

    boxes: A
    labels: A
    extras: Mapping[str, A] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.boxes.shape[0] if self.boxes.ndim == 2 else -1
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"ImageTargets: boxes must be (N, 4) xyxy, got {tuple(self.boxes.shape)}")
        if tuple(self.labels.shape) != (n,):
            raise ValueError(f"ImageTargets: labels must be (N,) = ({n},) like the boxes, got {tuple(self.labels.shape)}")
        for key, value in self.extras.items():
            if value.shape[:1] != self.boxes.shape[:1]:
                raise ValueError(f"ImageTargets: extras[{key!r}] must be ({n}, ...) like the boxes, "
                                 f"got {tuple(value.shape)}")
        object.__setattr__(self, "extras", dict(self.extras))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls) -> ImageTargets[np.ndarray]:
        """No boxes (numpy)."""
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))

    def equal(self, other: ImageTargets) -> bool:
        """Exactly the same boxes, labels and extras (values, shapes and dtypes): the reproducibility check."""
        return _same((self.boxes, self.labels, self.extras), (other.boxes, other.labels, other.extras))

    def to_packed(self) -> A:
        """(N, 5) float32 ``[class, x1, y1, x2, y2]``: the layout samples had before this record (deprecated)."""
        if isinstance(self.boxes, Tensor):
            return torch.cat((torch.as_tensor(self.labels)[:, None].to(self.boxes.dtype), self.boxes), 1)
        return np.concatenate([np.asarray(self.labels, np.float32)[:, None], np.asarray(self.boxes, np.float32)], 1)

    def __getitem__(self, index: Any) -> A:
        """Deprecated: index the (N, 5) ``[class, x1, y1, x2, y2]`` layout (``targets[:, 1:]``) that samples had
        before this record; read ``boxes`` / ``labels``."""
        warnings.warn("indexing a sample's targets as an (N, 5) [cls, x1, y1, x2, y2] array is deprecated; read "
                      "targets.boxes / targets.labels", DeprecationWarning, stacklevel=2)
        return self.to_packed()[index]


@dataclass(frozen=True, eq=False)
class Targets:
    """A batch of detection targets, zero padded to the largest box count ``M`` of the batch (M may be 0).

    Attributes:
        boxes: (B, M, 4) floating point (float32 from :meth:`collate`) xyxy input pixels (padding rows are 0).
        labels: (B, M) int64 class indices (padding rows are 0).
        mask: (B, M) bool, True for real boxes (:meth:`collate` puts an image's real boxes first; nothing relies
            on it).
        extras: per-box tensors by name, each (B, M, ...) (see the module docstring).

    Shapes and dtypes are checked on construction (no device sync); the class ids' range is the loss's to check,
    since only it knows the number of classes.
    """

    boxes: Tensor
    labels: Tensor
    mask: Tensor
    extras: Mapping[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.boxes.dim() != 3 or self.boxes.shape[-1] != 4:
            raise ValueError(f"Targets: boxes must be (B, M, 4) xyxy, got {tuple(self.boxes.shape)}")
        bm = tuple(self.boxes.shape[:2])
        if tuple(self.labels.shape) != bm or tuple(self.mask.shape) != bm:
            raise ValueError(f"Targets: labels and mask must be (B, M) = {bm} like the boxes, got labels "
                             f"{tuple(self.labels.shape)}, mask {tuple(self.mask.shape)}")
        if not self.boxes.is_floating_point():
            raise ValueError(f"Targets: boxes must be floating point, got {self.boxes.dtype}")
        if self.labels.dtype != torch.int64:
            raise ValueError(f"Targets: labels must be int64 class indices, got {self.labels.dtype}")
        if self.mask.dtype != torch.bool:
            raise ValueError(f"Targets: mask must be bool, got {self.mask.dtype}")
        for key, value in self.extras.items():
            if tuple(value.shape[:2]) != bm:
                raise ValueError(f"Targets: extras[{key!r}] must be (B, M, ...) = {bm + ('...',)}, "
                                 f"got {tuple(value.shape)}")
        object.__setattr__(self, "extras", dict(self.extras))

    # ------------------------------------------------------------------------------------------ shape
    @property
    def batch_size(self) -> int:
        """B."""
        return int(self.boxes.shape[0])

    @property
    def max_boxes(self) -> int:
        """M, the padded box count."""
        return int(self.boxes.shape[1])

    @property
    def num_boxes(self) -> Tensor:
        """(B,) int64 real boxes per image (on the record's device; no sync)."""
        return self.mask.sum(1)

    @property
    def device(self) -> torch.device:
        return self.boxes.device

    def __len__(self) -> int:
        return self.batch_size

    def equal(self, other: Targets) -> bool:
        """Exactly the same boxes, labels, mask and extras (values, shapes and dtypes): the reproducibility check."""
        return _same((self.boxes, self.labels, self.mask, self.extras),
                     (other.boxes, other.labels, other.mask, other.extras))

    # ------------------------------------------------------------------------------------------ build
    @classmethod
    def collate(cls, images: Sequence[ImageTargets]) -> Targets:
        """Pad and stack per-image targets (numpy arrays or tensors) in one pass: one copy per image, none per box.

        Every image must carry the same extras (names, trailing shapes and dtypes); boxes become float32 and labels
        int64 whatever they came as.
        """
        counts = [len(t) for t in images]
        b, m = len(images), max(counts, default=0)
        boxes = torch.zeros((b, m, 4), dtype=torch.float32)
        labels = torch.zeros((b, m), dtype=torch.int64)
        mask = torch.zeros((b, m), dtype=torch.bool)
        keys = list(images[0].extras) if images else []
        extras: dict[str, Tensor] = {}
        for key in keys:
            first = torch.as_tensor(images[0].extras[key])
            extras[key] = torch.zeros((b, m, *first.shape[1:]), dtype=first.dtype)
        for i, (t, n) in enumerate(zip(images, counts)):
            if t.extras.keys() != set(keys):
                raise ValueError(f"Targets.collate: image {i} has extras {sorted(t.extras)}, image 0 has {sorted(keys)}")
            if n:
                _put(boxes, i, n, t.boxes)
                _put(labels, i, n, t.labels)
                mask[i, :n] = True
                for key in keys:
                    _put(extras[key], i, n, t.extras[key])
        return cls(boxes, labels, mask, extras)

    @classmethod
    def empty(cls, batch_size: int, device: torch.device | str | None = None) -> Targets:
        """``batch_size`` images without boxes (M = 0)."""
        return cls(torch.zeros((batch_size, 0, 4), device=device), torch.zeros((batch_size, 0), dtype=torch.int64,
                   device=device), torch.zeros((batch_size, 0), dtype=torch.bool, device=device))

    @classmethod
    def from_packed(cls, packed: Tensor, mask: Tensor | None = None) -> Targets:
        """The record of the deprecated packed form: ``packed`` (B, M, 5) float ``[class, x1, y1, x2, y2]`` input px
        and ``mask`` (B, M) (any dtype, non-zero = real box; default: every row is real)."""
        packed = torch.as_tensor(packed)
        if packed.dim() != 3 or packed.shape[-1] != 5:
            raise ValueError(f"packed targets must be (B, M, 5) [cls, x1, y1, x2, y2], got {tuple(packed.shape)}")
        if mask is None:
            mask = torch.ones(packed.shape[:2], dtype=torch.bool, device=packed.device)
        mask = torch.as_tensor(mask, device=packed.device)
        if tuple(mask.shape) != tuple(packed.shape[:2]):
            raise ValueError(f"target mask must be (B, M) = {tuple(packed.shape[:2])}, got {tuple(mask.shape)}")
        return cls(packed[..., 1:5].float(), packed[..., 0].long(), mask.bool())

    def to_packed(self) -> Tensor:
        """(B, M, 5) float32 ``[class, x1, y1, x2, y2]`` (the deprecated layout; the mask is :attr:`mask`)."""
        return torch.cat((self.labels[..., None].to(self.boxes.dtype), self.boxes), -1)

    # ------------------------------------------------------------------------------------------ transform
    def _map(self, fn: Any) -> Targets:
        return Targets(fn(self.boxes), fn(self.labels), fn(self.mask), {k: fn(v) for k, v in self.extras.items()})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Targets:
        """Every tensor (extras included) on ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Targets:
        """Page-locked copies (what ``DataLoader(pin_memory=True)`` calls on a batch element)."""
        return self._map(lambda t: t.pin_memory())

    def scaled(self, sx: float, sy: float) -> Targets:
        """Boxes (and the ``"keypoints"`` extra) in an input resized by ``sx`` horizontally and ``sy`` vertically
        (multi-scale training); a new record, this one is unchanged."""
        boxes = self.boxes.clone()
        boxes[..., 0::2] *= sx
        boxes[..., 1::2] *= sy
        extras = dict(self.extras)
        if KEYPOINTS in extras:
            points = extras[KEYPOINTS].clone()
            points[..., 0] *= sx
            points[..., 1] *= sy
            extras[KEYPOINTS] = points
        return Targets(boxes, self.labels, self.mask, extras)

    def per_image(self) -> list[ImageTargets[Tensor]]:
        """The real boxes of each image (where :attr:`mask` is True), as :class:`ImageTargets` of tensors."""
        return [ImageTargets(self.boxes[i][self.mask[i]], self.labels[i][self.mask[i]],
                             {k: v[i][self.mask[i]] for k, v in self.extras.items()})
                for i in range(self.batch_size)]

def _same(a: tuple, b: tuple) -> bool:
    """Fields ``a`` and ``b`` (arrays, tensors, dicts of them) are exactly equal, dtypes included."""
    *arrays_a, extras_a = a
    *arrays_b, extras_b = b
    if extras_a.keys() != extras_b.keys():
        return False
    pairs = list(zip(arrays_a, arrays_b)) + [(extras_a[k], extras_b[k]) for k in extras_a]
    for x, y in pairs:
        if type(x) is not type(y) or x.dtype != y.dtype or tuple(x.shape) != tuple(y.shape):
            return False
        if not (torch.equal(x, y) if isinstance(x, Tensor) else np.array_equal(x, y)):
            return False
    return True


def _put(dst: Tensor, i: int, n: int, src: np.ndarray | Tensor) -> None:
    """``dst[i, :n] = src`` (CPU ``dst``), numpy sources through numpy: dataset arrays may be read-only views of
    shared records, which torch would warn about wrapping although nothing writes to them."""
    if isinstance(src, Tensor):
        dst[i, :n] = src
    else:
        dst.numpy()[i, :n] = src


def as_targets(targets: Targets | Tensor, mask: Tensor | None = None, *, caller: str) -> Targets:
    """``targets`` as a :class:`Targets`: itself, or (deprecated, with a :class:`DeprecationWarning`) the record of
    a packed (B, M, 5) tensor and its ``mask``. ``caller`` names the function in the messages."""
    if isinstance(targets, Targets):
        if mask is not None:
            # model(images, batch["targets"], batch["target_mask"]): the loop of an earlier version, on a new batch
            if mask is not targets.mask and not (tuple(mask.shape) == tuple(targets.mask.shape)
                                                 and bool((mask.to(targets.mask.device).bool() == targets.mask).all())):
                raise ValueError(f"{caller}: a target mask that differs from targets.mask; a Targets record carries "
                                 f"its own mask")
            warnings.warn(f"{caller}: a separate target mask is deprecated; a Targets record carries its own "
                          f"(targets.mask)", DeprecationWarning, stacklevel=3)
        return targets
    if not isinstance(targets, (Tensor, np.ndarray)):
        raise TypeError(f"{caller}: targets must be a cspdet.det.Targets, got {type(targets).__name__}")
    warnings.warn(f"{caller}: packed (B, M, 5) targets with a separate mask are deprecated; pass a "
                  f"cspdet.det.Targets (Targets.from_packed(packed, mask) converts)", DeprecationWarning, stacklevel=3)
    return Targets.from_packed(targets, mask)
