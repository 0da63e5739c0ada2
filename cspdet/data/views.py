"""The dataset views a loader iterates: :class:`TrainDataset` (augmented training samples with the per-process
buffer of fitted images, see :mod:`cspdet.data.loader` for seeding and speed) and :class:`ValDataset`
(letterboxed validation images). Both yield :class:`DetectionItem` records for
:func:`cspdet.data.loader.collate_detection`."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.utils.data

from ..det.targets import ImageTargets
from .datasets import DetectionDataset
from .image_io import read_image
from .problems import DatasetError
from .letterbox import PAD_VALUE, Letterbox
from .sampler import EpochSampler
from .transforms import AugmentConfig, fit_size, train_sample

__all__ = ["DetectionItem", "TrainDataset", "ValDataset"]

MAX_REPLACEMENTS = 20  # a batch item is replaced at most this many times before giving up (all bad?)
MIN_BUFFER = 8  # fitted images kept per process even without a pool (a sample uses up to 5)

Fitted = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]  # image, boxes, labels, original (h, w)


@dataclass(frozen=True, eq=False)
class DetectionItem:
    """One sample as a view yields it and :func:`~cspdet.data.loader.collate_detection` batches it.

    Attributes:
        image: (H, W, 3) uint8 RGB, at the loader's input size.
        targets: its :class:`~cspdet.det.targets.ImageTargets` (boxes (N, 4) float32 xyxy px of ``image``, labels
            (N,) int64).
        image_id: the dataset's id of the image (for a mosaic: of the image the sample was drawn for).
        ratio: letterbox scale of the original image (``boxes / ratio`` = original px); 1.0 for training samples.
        orig_size: (h, w) of the original image.
        problems: in a loader worker, the :class:`~cspdet.data.DatasetProblem` s met while producing the sample,
            which travel to the main process with the batch (see :class:`~cspdet.data.DetectionLoader`).

    Read it by field name. Code written for the tuple that views yielded before (``image, targets, image_id,
    ratio, orig = view[i]``, ``view[i][0]``) still works: iterating and indexing give that tuple (the problems
    as a 6th element when there are any).
    """

    image: np.ndarray
    targets: ImageTargets
    image_id: int
    ratio: float
    orig_size: tuple[int, int]
    problems: tuple = ()

    def _as_tuple(self) -> tuple:
        head = (self.image, self.targets, self.image_id, self.ratio, self.orig_size)
        return (*head, list(self.problems)) if self.problems else head

    def __iter__(self):
        return iter(self._as_tuple())

    def __len__(self) -> int:
        return 6 if self.problems else 5

    def __getitem__(self, index: int | slice) -> Any:
        return self._as_tuple()[index]


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text


def _rgba(image: np.ndarray) -> np.ndarray:
    """RGB -> RGBA (a new array). Mosaic and MixUp warp the buffered images; OpenCV's warpAffine is ~2.4x
    faster on 4-channel than on 3-channel uint8 images, which outweighs converting once per decode."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2RGBA)


class _DatasetView(torch.utils.data.Dataset):
    """A view of a :class:`DetectionDataset` (``self.dataset``) that answers for it what trainers and
    evaluators ask: length, class names, category ids and the skipped-problems report."""

    dataset: DetectionDataset

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    @property
    def category_ids(self) -> list[int]:
        return self.dataset.category_ids

    @property
    def skipped(self):
        return self.dataset.skipped

    def __len__(self) -> int:
        return len(self.dataset)


class TrainDataset(_DatasetView):
    """Augmenting view of a :class:`DetectionDataset` for training.

    ``dataset[(index, epoch, strong[, pool])]`` -> a :class:`DetectionItem` (ratio 1.0, ``orig_size`` of the
    original image ``index``; in a worker process that met bad images while producing it, their ``problems``, see
    :class:`~cspdet.data.loader.DetectionLoader`). ``pool`` (a tuple of sample indices, from
    :class:`~cspdet.data.sampler.EpochSampler`) is where mosaic/MixUp partners are drawn from; without it they are
    drawn from the whole dataset. Plain integer indices use the current epoch and mosaic state.

    Args:
        dataset: the source dataset.
        cfg: augmentation settings (:class:`AugmentConfig` or a DataConfig).
        seed: base seed of all augmentation randomness.
    """

    def __init__(self, dataset: DetectionDataset, cfg: AugmentConfig | Any = None, seed: int = 0):
        self.dataset = dataset
        self.cfg = cfg if isinstance(cfg, AugmentConfig) else AugmentConfig.from_config(cfg)
        self.seed = int(seed)
        self.epoch = 0
        self.strong = True
        self.sampler: EpochSampler | None = None
        self._bad: set[int] = set()
        # MixUp partners need boxes (as in YOLOX); remember which samples have any
        self._has_boxes = dataset.records.box_counts() > 0
        self._with_boxes = np.flatnonzero(self._has_boxes).astype(np.int64)
        # index -> fitted sample, least recently used first; per process (workers fill their own)
        self._buffer: OrderedDict[int, Fitted] = OrderedDict()


    def set_epoch(self, epoch: int) -> None:
        """New shuffling order and new augmentation seeds for ``epoch``."""
        self.epoch = int(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)

    def close_mosaic(self) -> None:
        """Switch mosaic, affine and mixup off (the final no-aug epochs); letterbox + HSV + flip remain."""
        self.strong = False

    def _load(self, index: int, rng: np.random.Generator, fitted: bool) -> tuple[int, Fitted]:
        """Decode ``index`` (or, if that image is unreadable, a random replacement): (the index actually
        loaded, its sample) - at its original size, or ``fitted`` into ``cfg.img_size``."""
        for _ in range(MAX_REPLACEMENTS):
            if index not in self._bad:
                # the dataset's one rule for an undecodable image: warned and counted there, replaced here
                got = self.dataset.try_load_sample(index, self._decode_fitted if fitted else self._decode_plain)
                if got is not None:
                    return index, got
                self._bad.add(index)
            index = int(rng.integers(0, len(self.dataset)))
        raise DatasetError(
            f"{self.dataset.name}: {MAX_REPLACEMENTS} images in a row failed to decode, giving up (are the images "
            f"readable?); {self.dataset.skipped.summary()}"
        )

    def _decode_plain(self, index: int) -> Fitted:
        s = self.dataset.load_sample(index)
        return s.image, s.boxes, s.labels, s.image.shape[:2]

    def _ram_cached(self) -> bool:
        cache = self.dataset.cache
        return cache is not None and cache.mode == "ram"

    def _fit_rgba(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """(decoded image resized to fit ``cfg.img_size``, as RGBA; its original (h, w))."""
        h0, w0 = image.shape[:2]
        _, nh, nw = fit_size(h0, w0, self.cfg.img_size)
        if (nh, nw) != (h0, w0):
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        return _rgba(image), (h0, w0)

    def _decode_fitted(self, index: int) -> Fitted:
        """Sample ``index`` resized to fit ``cfg.img_size`` (the size mosaic and MixUp use it at) as RGBA,
        boxes scaled per axis by exactly the resize factors. The result depends on ``index`` only (never on what
        is buffered or cached), which keeps augmentation reproducible."""
        path = self.dataset.records.path(index)
        rec_h, rec_w = self.dataset.records.size(index)
        size = self.cfg.img_size
        if self._ram_cached():
            # the RAM cache holds the fitted image itself: decoded, resized and converted once per run
            image, (h0, w0) = self.dataset.cache.get_derived(path, ("fitted_rgba", size), self._fit_rgba)
            if rec_h is not None and (rec_h, rec_w) != (h0, w0):
                self.dataset._note_size_mismatch(index, h0, w0)  # reported once per file, as load_sample does
            boxes, labels = self.dataset.targets(index, h0, w0)
            nh, nw = image.shape[:2]
            if (nh, nw) != (h0, w0):
                boxes = boxes * np.array([nw / w0, nh / h0, nw / w0, nh / h0], np.float32)
            return image, boxes, labels, (h0, w0)
        if self.dataset.cache is None and rec_h and rec_w and str(path).lower().endswith((".jpg", ".jpeg")):
            h0, w0 = int(rec_h), int(rec_w)
            r, nh, nw = fit_size(h0, w0, size)
            # the largest libjpeg reduction that still leaves at least the target size (only ever shrink)
            f = next((f for f in (8, 4, 2) if r * f <= 1.0), 1)
            if f > 1:
                image = read_image(path, reduce=f)
                if image.shape[:2] == (-(-h0 // f), -(-w0 // f)):
                    image = _rgba(cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR))
                    boxes, labels = self.dataset.targets(index, h0, w0)
                    boxes = boxes * np.array([nw / w0, nh / h0, nw / w0, nh / h0], np.float32)
                    return image, boxes, labels, (h0, w0)
                # the file disagrees with the annotation (e.g. EXIF rotation): the full decode below
                # handles and reports that exactly as for any other use of the image
        s = self.dataset.load_sample(index)
        h0, w0 = s.image.shape[:2]
        r, nh, nw = fit_size(h0, w0, size)
        if (nh, nw) == (h0, w0):
            return _rgba(s.image), s.boxes, s.labels, (h0, w0)
        image = _rgba(cv2.resize(s.image, (nw, nh), interpolation=cv2.INTER_LINEAR))
        return image, s.boxes * np.array([nw / w0, nh / h0, nw / w0, nh / h0], np.float32), s.labels, (h0, w0)

    def _fitted(self, index: int, rng: np.random.Generator, capacity: int) -> Fitted:
        """The fitted sample ``index`` from the buffer, or decoded and buffered (at most ``capacity``)."""
        entry = self._buffer.get(index)
        if entry is not None and index not in self._bad:
            self._buffer.move_to_end(index)
            return entry
        loaded, entry = self._load(index, rng, fitted=True)
        self._buffer[loaded] = entry
        self._buffer.move_to_end(loaded)
        while len(self._buffer) > capacity:
            self._buffer.popitem(last=False)
        return entry

    def _pick_mixup(self, rng: np.random.Generator, pool: np.ndarray | None) -> int:
        if pool is not None:
            candidates = pool[self._has_boxes[pool]]
            if len(candidates):
                return int(candidates[rng.integers(0, len(candidates))])
        if len(self._with_boxes):
            return int(self._with_boxes[rng.integers(0, len(self._with_boxes))])
        return int(rng.integers(0, len(self.dataset)))

    def __getitem__(self, key: int | tuple):
        pool = None
        if isinstance(key, tuple):
            index, epoch, strong, *rest = key
            if rest and rest[0] is not None and len(rest[0]):
                pool = np.asarray(rest[0], np.int64)
        else:
            index, epoch, strong = key, self.epoch, self.strong
        index = int(index)
        rng = np.random.default_rng([self.seed, int(epoch), index])
        # the original size of the indexed image (before augmentation), for bookkeeping only
        image_id = int(self.dataset.records.image_ids[index])
        rec_h, rec_w = self.dataset.records.size(index)
        orig = (rec_h or 0, rec_w or 0)

        if strong:
            capacity = max(MIN_BUFFER, len(pool) if pool is not None else 0)

            def load(i: int):
                nonlocal orig
                image, boxes, labels, hw = self._fitted(i, rng, capacity)
                if i == index:
                    orig = hw
                return image, boxes, labels

        else:  # letterbox only (final no-aug epochs): one plain decode, nothing to share
            loaded: dict[int, Fitted] = {}
            # With a RAM cache, the fitted image from the cache: letterboxing it only pads, and its resize
            # is the one letterbox would do (same size, same interpolation), so the pixels are the same and
            # the cache keeps holding one form of each image. Its boxes are scaled as letterbox scales them
            # (by the isotropic ratio r, not per axis), so the sample equals the uncached one exactly.
            fitted = self._ram_cached()

            def load(i: int):
                nonlocal orig
                if i not in loaded:
                    j, loaded[i] = self._load(i, rng, fitted=fitted)
                    if fitted:
                        image, _, _, (h0, w0) = loaded[i]
                        boxes, labels = self.dataset.targets(j, h0, w0)
                        r = min(self.cfg.img_size[0] / h0, self.cfg.img_size[1] / w0)
                        loaded[i] = (image, boxes * np.float32(r), labels, (h0, w0))
                    if j == index:
                        orig = loaded[i][3]
                return loaded[i][:3]

        image, boxes, labels = train_sample(
            index, len(self.dataset), load, rng, self.cfg, strong=bool(strong),
            pick_mixup=lambda g: self._pick_mixup(g, pool), partners=pool,
        )  # fmt: skip
        return _with_pending(self.dataset, DetectionItem(image, ImageTargets(boxes, labels), image_id, 1.0, orig))


class ValDataset(_DatasetView):
    """Letterboxed view of a :class:`DetectionDataset` for evaluation (no randomness).

    ``dataset[i]`` -> a :class:`DetectionItem` (image letterboxed to ``img_size``, boxes in letterboxed px, ratio
    r, the original (h, w); problems met in a worker, as for :class:`TrainDataset`). Boxes map back to the
    original image with ``/ r``.
    """

    def __init__(self, dataset: DetectionDataset, img_size: int | Sequence[int]):
        self.dataset = dataset
        self.letterbox = Letterbox(img_size)
        self.img_size = self.letterbox.size

    def coco_gt(self):
        return self.dataset.coco_gt()

    def __getitem__(self, index: int):
        s = self.dataset.try_load_sample(index)
        if s is None:
            # keep the batch (and the image id) so the evaluator still sees every image: a grey placeholder
            image = np.full((*self.img_size, 3), PAD_VALUE, np.uint8)
            rec_h, rec_w = self.dataset.records.size(index)
            image_id = int(self.dataset.records.image_ids[index])
            item = DetectionItem(image, ImageTargets.empty(), image_id, 1.0, (rec_h or 0, rec_w or 0))
            return _with_pending(self.dataset, item)
        image, r = self.letterbox.apply(s.image)
        boxes = s.boxes * np.float32(r)
        targets = ImageTargets(boxes, s.labels.astype(np.int64, copy=False))
        return _with_pending(self.dataset, DetectionItem(image, targets, s.image_id, float(r), s.image.shape[:2]))


def _with_pending(dataset: DetectionDataset, item: DetectionItem) -> DetectionItem:
    """In a worker process, attach the problems found while producing ``item`` so that they reach the main process
    through the collate function."""
    pending = dataset.take_pending()
    return replace(item, problems=tuple(pending)) if pending else item
