"""Training and validation loaders: augmentation wrappers, sampling, seeding and collation.

Reproducibility: the sampler (in the main process) yields ``(index, epoch, strong, pool)`` keys and each
sample draws every random choice from ``np.random.default_rng([seed, epoch, index])``; ``pool`` (the block
of the epoch's order that mosaic/MixUp partners come from) is part of the key. A sample's augmentation
therefore depends only on (seed, epoch, index, pool), not on the number of workers, their scheduling,
what a worker decoded before or whether workers are persistent; shuffling comes from a DistributedSampler
seeded with ``seed`` and the epoch (also with one process).

Speed: a training sample needs 5 images (4 mosaic tiles + 1 MixUp partner). Each process keeps a small
LRU buffer of images already resized to the size they are used at (fit into ``img_size``), bounded by the
pool size; since partners come from the current pool, each image is decoded about once per epoch with 0
workers (about twice with 2 workers, which share a pool). Large JPEGs are decoded at 1/2, 1/4 or 1/8 size
directly when they would be shrunk that much anyway. With a RAM cache (``cache="ram"``) the cache keeps
the fitted RGBA images themselves (:meth:`ImageCache.get_derived`), so each image is decoded, resized and
converted once per run, and (warmed before workers fork) shared by all workers.

``set_epoch`` / ``close_mosaic`` act on the main-process sampler, which is what makes them reach
persistent workers: call them before iterating the loader for that epoch.

Mosaic partner blocks (``mosaic_pool``, default 64, an :class:`AugmentConfig` field read from the DataConfig
when it has one): mosaic and MixUp partners of a sample come from the block of about ``mosaic_pool``
consecutive samples of the epoch's shuffled order that holds it (see :class:`EpochSampler`); ``0`` draws them
from the whole dataset, as YOLOX does. Larger pools mix more widely and cost more buffer memory (about
``mosaic_pool`` x 1.6 MB at 640 per process) and decoding; every image is still a partner equally often.

Robustness: an image that fails to decode mid-epoch is replaced by another sample (train) or by a grey
placeholder without boxes (val) and reported once per file: a :class:`DatasetWarning` naming the file and
a count in the main process's ``dataset.skipped``, also when it was found in a worker process (the problem
travels back with the batch and the loader records it, see :class:`DetectionLoader`). At the end of a pass
in which images failed, the loader warns the totals. With ``strict`` the first such image raises
:class:`DatasetError` with the same message, in the main process.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.utils.data
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .datasets import DetectionDataset
from .image_io import ImageReadError, read_image
from .problems import DatasetWarning, user_stacklevel
from .letterbox import PAD_VALUE, Letterbox
from .transforms import AugmentConfig, fit_size, train_sample

__all__ = [
    "TrainDataset",
    "ValDataset",
    "EpochSampler",
    "DetectionLoader",
    "collate_detection",
    "build_train_loader",
    "build_val_loader",
]

MAX_REPLACEMENTS = 20  # a batch item is replaced at most this many times before giving up (all bad?)
MIN_BUFFER = 8  # fitted images kept per process even without a pool (a sample uses up to 5)

Fitted = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]  # image, boxes, labels, original (h, w)


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

    ``dataset[(index, epoch, strong[, pool])]`` -> (image (H, W, 3) uint8, targets (N, 5) float32 [cls,
    x1, y1, x2, y2], image_id, ratio 1.0, (h, w) of the original image ``index``), plus, in a worker
    process that met bad images while producing it, a list of their problems (see :class:`DetectionLoader`). ``pool`` (a tuple of
    sample indices, from :class:`EpochSampler`) is where mosaic/MixUp partners are drawn from; without it
    they are drawn from the whole dataset. Plain integer indices use the current epoch and mosaic state.

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
        self._has_boxes = np.array([len(r.labels) > 0 for r in dataset.records], bool)
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
                try:
                    if fitted:
                        return index, self._decode_fitted(index)
                    s = self.dataset.load_sample(index)
                    return index, (s.image, s.boxes, s.labels, s.image.shape[:2])
                except ImageReadError as err:
                    self._bad.add(index)
                    self.dataset.report_load_failure(index, err)
            index = int(rng.integers(0, len(self.dataset)))
        raise RuntimeError(
            f"{self.dataset.name}: {MAX_REPLACEMENTS} images in a row failed to decode; "
            f"{self.dataset.skipped.summary()}"
        )

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
        rec = self.dataset.records[index]
        size = self.cfg.img_size
        if self._ram_cached():
            # the RAM cache holds the fitted image itself: decoded, resized and converted once per run
            image, (h0, w0) = self.dataset.cache.get_derived(rec.path, ("fitted_rgba", size), self._fit_rgba)
            if rec.height is not None and (rec.height, rec.width) != (h0, w0):
                self.dataset._note_size_mismatch(index, h0, w0)  # reported once per file, as load_sample does
            boxes, labels = self.dataset.targets(index, h0, w0)
            nh, nw = image.shape[:2]
            if (nh, nw) != (h0, w0):
                boxes = boxes * np.array([nw / w0, nh / h0, nw / w0, nh / h0], np.float32)
            return image, boxes, labels, (h0, w0)
        if self.dataset.cache is None and rec.height and rec.width and str(rec.path).lower().endswith((".jpg", ".jpeg")):
            h0, w0 = int(rec.height), int(rec.width)
            r, nh, nw = fit_size(h0, w0, size)
            # the largest libjpeg reduction that still leaves at least the target size (only ever shrink)
            f = next((f for f in (8, 4, 2) if r * f <= 1.0), 1)
            if f > 1:
                image = read_image(rec.path, reduce=f)
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
        rec = self.dataset.records[index]
        orig = (rec.height or 0, rec.width or 0)

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
        targets = np.concatenate([labels[:, None].astype(np.float32), boxes], axis=1)
        return _with_pending(self.dataset, (image, targets, rec.image_id, 1.0, orig))


class ValDataset(_DatasetView):
    """Letterboxed view of a :class:`DetectionDataset` for evaluation (no randomness).

    ``dataset[i]`` -> (image (H, W, 3) uint8, targets (N, 5) float32 in letterboxed px, image_id, ratio r,
    (h, w) original size) (plus problems met in a worker, as for :class:`TrainDataset`). Boxes map back to
    the original image with ``/ r``.
    """

    def __init__(self, dataset: DetectionDataset, img_size: int | Sequence[int]):
        self.dataset = dataset
        self.letterbox = Letterbox(img_size)
        self.img_size = self.letterbox.size

    def coco_gt(self):
        return self.dataset.coco_gt()

    def __getitem__(self, index: int):
        rec = self.dataset.records[index]
        try:
            s = self.dataset.load_sample(index)
        except ImageReadError as err:
            # keep the batch (and the image id) so the evaluator still sees every image: a grey placeholder
            self.dataset.report_load_failure(index, err)
            image = np.full((*self.img_size, 3), PAD_VALUE, np.uint8)
            item = (image, np.zeros((0, 5), np.float32), rec.image_id, 1.0, (rec.height or 0, rec.width or 0))
            return _with_pending(self.dataset, item)
        image, r = self.letterbox.apply(s.image)
        boxes = s.boxes * np.float32(r)
        targets = np.concatenate([s.labels[:, None].astype(np.float32), boxes], axis=1)
        return _with_pending(self.dataset, (image, targets, rec.image_id, float(r), s.image.shape[:2]))


def _with_pending(dataset: DetectionDataset, item: tuple) -> tuple:
    """In a worker process, append the problems found while producing ``item`` (a 6th element, only when
    there are any) so that they reach the main process through the collate function."""
    pending = dataset.take_pending()
    return (*item, pending) if pending else item


def collate_detection(batch: Sequence[tuple]) -> dict[str, torch.Tensor]:
    """Stack samples into the cspdet batch dict.

    Returns:
        images uint8 (B, 3, H, W) RGB; targets float32 (B, M, 5) [cls, x1, y1, x2, y2] zero padded, with M
        the largest box count in the batch (may be 0); target_mask bool (B, M); image_ids int64 (B,);
        ratios float32 (B,); orig_sizes int64 (B, 2) (h, w). Only when a worker found bad images while
        producing the batch, also "problems": a list of :class:`~cspdet.data.DatasetProblem`, which
        :class:`DetectionLoader` removes and records in the main process.
    """
    images = _stack_chw([b[0] for b in batch])
    counts = [len(b[1]) for b in batch]
    m = max(counts, default=0)
    targets = torch.zeros((len(batch), m, 5), dtype=torch.float32)
    mask = torch.zeros((len(batch), m), dtype=torch.bool)
    for i, (b, n) in enumerate(zip(batch, counts)):
        if n:
            targets[i, :n] = torch.from_numpy(np.asarray(b[1], np.float32))
            mask[i, :n] = True
    return {
        "images": images,
        "targets": targets,
        "target_mask": mask,
        "image_ids": torch.tensor([int(b[2]) for b in batch], dtype=torch.int64),
        "ratios": torch.tensor([float(b[3]) for b in batch], dtype=torch.float32),
        "orig_sizes": torch.tensor([[int(b[4][0]), int(b[4][1])] for b in batch], dtype=torch.int64),
        **({"problems": problems} if (problems := [p for b in batch if len(b) > 5 for p in b[5]]) else {}),
    }


def _stack_chw(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """(B, 3, H, W) uint8 from B (H, W, 3) uint8 arrays, with a single copy per image.

    cv2.split writes each channel plane straight into the output (about 10x faster than a strided torch
    copy). In a worker process the output is allocated in shared memory, like default_collate does, so
    handing the batch to the main process costs no further copy.
    """
    h, w = arrays[0].shape[:2]
    for a in arrays:
        if a.shape != (h, w, 3) or a.dtype != np.uint8:
            raise ValueError(f"all images of a batch must be ({h}, {w}, 3) uint8, got {a.shape} {a.dtype}")
    shape = (len(arrays), 3, h, w)
    out = None
    if torch.utils.data.get_worker_info() is not None:
        try:  # same (private) call default_collate uses for shared-memory outputs
            storage = torch.empty(0, dtype=torch.uint8)._typed_storage()._new_shared(int(np.prod(shape)))
            out = torch.empty(0, dtype=torch.uint8).new(storage).view(shape)
        except (AttributeError, RuntimeError):
            out = torch.empty(shape, dtype=torch.uint8).share_memory_()
    if out is None:
        # numpy's allocator reuses freed heap memory, while a torch.empty this large is a fresh mmap
        # each batch whose first touch page-faults: ~4x slower to fill (8 vs 2 ms for 16 x 640 x 640)
        out = torch.from_numpy(np.empty(shape, np.uint8))
    planes = out.numpy()
    for k, a in enumerate(arrays):
        cv2.split(np.ascontiguousarray(a), mv=[planes[k, 0], planes[k, 1], planes[k, 2]])
    return out


class EpochSampler(Sampler):
    """Yields ``(index, epoch, strong, pool)`` keys for :class:`TrainDataset`: a seeded, per-epoch shuffle
    (``DistributedSampler`` semantics: each of ``world_size`` ranks gets an equal share) tagged with the
    epoch and mosaic state that were current when iteration started.

    ``pool``: this rank's order is cut into blocks of about ``pool`` consecutive samples (``n / round(n /
    pool)`` each, so no tiny last block) and every key carries its block as a tuple; mosaic/MixUp partners
    are drawn from it. Each image is thus a partner as often as before (partners are still uniform over the
    epoch), but the images one block needs fit a small buffer, so each is decoded about once. ``pool=0``
    yields ``(index, epoch, strong)`` keys: partners from the whole dataset.
    """

    def __init__(
        self, dataset: TrainDataset, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True,
        pool: int = 0,
    ):  # fmt: skip
        self.dataset = dataset
        self.pool = int(pool)
        self.inner = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple]:
        epoch, strong = self.dataset.epoch, self.dataset.strong
        if self.pool <= 0:
            for index in self.inner:
                yield (int(index), epoch, strong)
            return
        order = [int(i) for i in self.inner]
        for block in np.array_split(np.asarray(order, np.int64), max(1, round(len(order) / self.pool))):
            pool = tuple(int(i) for i in block)  # one object shared by the block's keys (pickled once)
            for index in pool:
                yield (index, epoch, strong, pool)

    def __len__(self) -> int:
        return len(self.inner)


class DetectionLoader(DataLoader):
    """A DataLoader whose iteration records, in the main process, the bad images its workers met.

    Workers decode in their own copy of the dataset, so what they count in ``dataset.skipped`` would be
    lost; instead each problem rides back with its batch (``batch["problems"]``, see
    :func:`collate_detection`) and is taken out of the batch here and recorded in the main process's
    ``dataset.skipped`` once per file (a :class:`DatasetWarning`; in strict mode a :class:`DatasetError`
    with the same message). When a pass over the loader met new problems, a summary warning with the totals
    follows its last batch. Batches handed out are exactly the dict of :func:`collate_detection`.
    """

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        source: DetectionDataset = self.dataset.dataset
        before = len(source.skipped)
        for batch in super().__iter__():
            problems = batch.pop("problems", None)
            if problems:
                source.record_problems(problems)
            yield batch
        new = len(source.skipped) - before
        if new:
            warnings.warn(
                f"{new} image problem(s) met while loading this pass (bad images were replaced); "
                + source.skipped.summary(hint="dataset.skipped, or `python tools/check_dataset.py`"),
                DatasetWarning,
                stacklevel=user_stacklevel(),
            )


def _worker_init(_: int) -> None:
    # Workers already run in parallel; OpenCV's own thread pool would only oversubscribe the cores.
    cv2.setNumThreads(0)
    torch.set_num_threads(1)


def _loader_kwargs(workers: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"num_workers": workers, "pin_memory": torch.cuda.is_available()}
    if workers > 0:
        kwargs.update(persistent_workers=True, worker_init_fn=_worker_init, prefetch_factor=2)
    return kwargs


def _warm_cache(dataset: DetectionDataset, workers: int, train: TrainDataset | None = None) -> None:
    """Decode every image into a RAM cache before workers fork, so they share it instead of each
    decoding (and holding) their own copy. For a training loader (``train``), the cache is filled with the
    fitted RGBA images the training transform uses (see :meth:`TrainDataset._decode_fitted`)."""
    cache = dataset.cache
    if cache is None or cache.mode != "ram" or workers == 0 or len(cache):
        return
    if train is not None:
        for index in range(len(dataset)):
            try:
                train._decode_fitted(index)
            except ImageReadError:  # reported when the sample is loaded (in a worker)
                pass
        return

    def on_error(path: str, err: Exception) -> None:  # reported when the sample is loaded
        pass

    cache.warm([r.path for r in dataset.records], on_error=on_error)


def build_train_loader(
    dataset: DetectionDataset,
    cfg: Any,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    workers: int | None = None,
) -> DataLoader:
    """Training loader: mosaic/affine/mixup/HSV/flip at ``cfg.img_size``, batches as in
    :func:`collate_detection`.

    Args:
        dataset: from :func:`cspdet.data.build_dataset` (split "train").
        cfg: a :class:`cspdet.config.DataConfig` (or dict / :class:`AugmentConfig`); ``workers`` is read
            from it unless given.
        batch_size: per process.
        seed: base seed of shuffling and augmentation.
        rank, world_size: DDP process index and count (world_size > 1 shards the data per rank).

    ``loader.dataset`` is a :class:`TrainDataset` with ``set_epoch(epoch)`` and ``close_mosaic()``.
    Augmentation settings are the :class:`AugmentConfig` fields found on ``cfg`` (YOLOX defaults for the
    rest), including ``mosaic_pool`` (partner block size, default 64; 0 = partners from the whole
    dataset, see the module docstring). The loader is a :class:`DetectionLoader`: images that fail to decode
    in workers are counted in the main process's ``dataset.skipped``.
    """
    aug = cfg if isinstance(cfg, AugmentConfig) else AugmentConfig.from_config(cfg)
    if workers is None:
        workers = int(cfg.get("workers", 0) if isinstance(cfg, dict) else getattr(cfg, "workers", 0))
    workers = min(workers, os.cpu_count() or 1)
    train = TrainDataset(dataset, aug, seed=seed)
    sampler = EpochSampler(train, seed=seed, rank=rank, world_size=world_size, shuffle=True, pool=aug.mosaic_pool)
    train.sampler = sampler
    _warm_cache(dataset, workers, train)
    return DetectionLoader(
        train, batch_size=batch_size, sampler=sampler, collate_fn=collate_detection, drop_last=False,
        **_loader_kwargs(workers),
    )  # fmt: skip


def build_val_loader(
    dataset: DetectionDataset,
    img_size: int | Sequence[int],
    batch_size: int,
    workers: int,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Evaluation loader: letterbox only, dataset order. With world_size > 1 each rank gets a share
    (DistributedSampler without shuffling; it pads by repeating images so all ranks have equal counts,
    so the evaluator should de-duplicate by image id when gathering)."""
    val = ValDataset(dataset, img_size)
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(val, num_replicas=world_size, rank=rank, shuffle=False, drop_last=False)
    _warm_cache(dataset, workers)
    return DetectionLoader(
        val, batch_size=batch_size, shuffle=False, sampler=sampler, collate_fn=collate_detection,
        drop_last=False, **_loader_kwargs(min(workers, os.cpu_count() or 1)),
    )  # fmt: skip
