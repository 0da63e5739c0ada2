"""Training and validation loaders: augmentation wrappers, sampling, seeding and collation.

Reproducibility: the sampler (in the main process) yields ``(index, epoch, strong)`` keys and each sample
draws every random choice from ``np.random.default_rng([seed, epoch, index])``. A sample's augmentation
therefore depends only on (seed, epoch, index), not on the number of workers, their scheduling or
whether workers are persistent; shuffling comes from a DistributedSampler seeded with ``seed`` and the
epoch (also with one process). ``set_epoch`` / ``close_mosaic`` act on the main-process sampler, which is
what makes them reach persistent workers: call them before iterating the loader for that epoch.

Robustness: an image that fails to decode mid-epoch is counted in ``dataset.skipped`` (with a warning
naming the file) and replaced by another sample (train) or by a grey placeholder without boxes (val).
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.utils.data
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .datasets import DetectionDataset
from .image_io import ImageReadError
from .transforms import PAD_VALUE, AugmentConfig, letterbox, train_sample

__all__ = [
    "TrainDataset",
    "ValDataset",
    "EpochSampler",
    "collate_detection",
    "build_train_loader",
    "build_val_loader",
]

MAX_REPLACEMENTS = 20  # a batch item is replaced at most this many times before giving up (all bad?)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text


class TrainDataset(torch.utils.data.Dataset):
    """Augmenting view of a :class:`DetectionDataset` for training.

    ``dataset[(index, epoch, strong)]`` -> (image (H, W, 3) uint8, targets (N, 5) float32 [cls, x1, y1,
    x2, y2], image_id, ratio 1.0, (h, w) of the original image ``index``). Plain integer indices use the
    current epoch and mosaic state.

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
        self._with_boxes = np.array([i for i, r in enumerate(dataset.records) if len(r.labels)], np.int64)

    # attributes a trainer uses
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

    def set_epoch(self, epoch: int) -> None:
        """New shuffling order and new augmentation seeds for ``epoch``."""
        self.epoch = int(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)

    def close_mosaic(self) -> None:
        """Switch mosaic, affine and mixup off (the final no-aug epochs); letterbox + HSV + flip remain."""
        self.strong = False

    def _load(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode ``index`` (or, if that image is unreadable, a random replacement)."""
        for _ in range(MAX_REPLACEMENTS):
            if index not in self._bad:
                try:
                    s = self.dataset.load_sample(index)
                    return s.image, s.boxes, s.labels
                except ImageReadError as err:
                    self._bad.add(index)
                    self.dataset.report_load_failure(index, err)
            index = int(rng.integers(0, len(self.dataset)))
        raise RuntimeError(
            f"{self.dataset.name}: {MAX_REPLACEMENTS} images in a row failed to decode; "
            f"{self.dataset.skipped.summary()}"
        )

    def _pick_mixup(self, rng: np.random.Generator) -> int:
        if len(self._with_boxes):
            return int(self._with_boxes[rng.integers(0, len(self._with_boxes))])
        return int(rng.integers(0, len(self.dataset)))

    def __getitem__(self, key: int | tuple[int, int, bool]):
        if isinstance(key, tuple):
            index, epoch, strong = key
        else:
            index, epoch, strong = key, self.epoch, self.strong
        index = int(index)
        rng = np.random.default_rng([self.seed, int(epoch), index])
        # the original size of the indexed image (before augmentation), for bookkeeping only
        rec = self.dataset.records[index]
        loaded: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

        def load(i: int):
            # one decode per use: a sample picked twice (e.g. as its own mosaic partner) is decoded once
            if i not in loaded:
                loaded[i] = self._load(i, rng)
            return loaded[i]

        image, boxes, labels = train_sample(
            index, len(self.dataset), load, rng, self.cfg, strong=bool(strong), pick_mixup=self._pick_mixup
        )
        first = loaded.get(index)
        orig = first[0].shape[:2] if first is not None else (rec.height or 0, rec.width or 0)
        targets = np.concatenate([labels[:, None].astype(np.float32), boxes], axis=1)
        return image, targets, rec.image_id, 1.0, orig


class ValDataset(torch.utils.data.Dataset):
    """Letterboxed view of a :class:`DetectionDataset` for evaluation (no randomness).

    ``dataset[i]`` -> (image (H, W, 3) uint8, targets (N, 5) float32 in letterboxed px, image_id, ratio r,
    (h, w) original size). Boxes map back to the original image with ``/ r``.
    """

    def __init__(self, dataset: DetectionDataset, img_size: int | Sequence[int]):
        self.dataset = dataset
        self.img_size = (int(img_size), int(img_size)) if isinstance(img_size, int) else tuple(int(v) for v in img_size)

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    @property
    def category_ids(self) -> list[int]:
        return self.dataset.category_ids

    @property
    def skipped(self):
        return self.dataset.skipped

    def coco_gt(self):
        return self.dataset.coco_gt()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        rec = self.dataset.records[index]
        try:
            s = self.dataset.load_sample(index)
        except ImageReadError as err:
            # keep the batch (and the image id) so the evaluator still sees every image: a grey placeholder
            self.dataset.report_load_failure(index, err)
            image = np.full((*self.img_size, 3), PAD_VALUE, np.uint8)
            return image, np.zeros((0, 5), np.float32), rec.image_id, 1.0, (rec.height or 0, rec.width or 0)
        image, r = letterbox(s.image, self.img_size)
        boxes = s.boxes * np.float32(r)
        targets = np.concatenate([s.labels[:, None].astype(np.float32), boxes], axis=1)
        return image, targets, rec.image_id, float(r), s.image.shape[:2]


def collate_detection(batch: Sequence[tuple]) -> dict[str, torch.Tensor]:
    """Stack samples into the cspdet batch dict.

    Returns:
        images uint8 (B, 3, H, W) RGB; targets float32 (B, M, 5) [cls, x1, y1, x2, y2] zero padded, with M
        the largest box count in the batch (may be 0); target_mask bool (B, M); image_ids int64 (B,);
        ratios float32 (B,); orig_sizes int64 (B, 2) (h, w).
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
        out = torch.empty(shape, dtype=torch.uint8)
    planes = out.numpy()
    for k, a in enumerate(arrays):
        cv2.split(np.ascontiguousarray(a), mv=[planes[k, 0], planes[k, 1], planes[k, 2]])
    return out


class EpochSampler(Sampler):
    """Yields ``(index, epoch, strong)`` keys for :class:`TrainDataset`: a seeded, per-epoch shuffle
    (``DistributedSampler`` semantics: each of ``world_size`` ranks gets an equal share) tagged with the
    epoch and mosaic state that were current when iteration started."""

    def __init__(self, dataset: TrainDataset, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.dataset = dataset
        self.inner = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int, bool]]:
        epoch, strong = self.dataset.epoch, self.dataset.strong
        for index in self.inner:
            yield (int(index), epoch, strong)

    def __len__(self) -> int:
        return len(self.inner)


def _worker_init(_: int) -> None:
    # Workers already run in parallel; OpenCV's own thread pool would only oversubscribe the cores.
    cv2.setNumThreads(0)
    torch.set_num_threads(1)


def _loader_kwargs(workers: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"num_workers": workers, "pin_memory": torch.cuda.is_available()}
    if workers > 0:
        kwargs.update(persistent_workers=True, worker_init_fn=_worker_init, prefetch_factor=2)
    return kwargs


def _warm_cache(dataset: DetectionDataset, workers: int) -> None:
    """Decode every image into a RAM cache before workers fork, so they share it instead of each
    decoding (and holding) their own copy."""
    cache = dataset.cache
    if cache is None or cache.mode != "ram" or workers == 0 or len(cache):
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
    """
    aug = cfg if isinstance(cfg, AugmentConfig) else AugmentConfig.from_config(cfg)
    if workers is None:
        workers = int(cfg.get("workers", 0) if isinstance(cfg, dict) else getattr(cfg, "workers", 0))
    workers = min(workers, os.cpu_count() or 1)
    train = TrainDataset(dataset, aug, seed=seed)
    sampler = EpochSampler(train, seed=seed, rank=rank, world_size=world_size, shuffle=True)
    train.sampler = sampler
    _warm_cache(dataset, workers)
    return DataLoader(
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
    return DataLoader(
        val, batch_size=batch_size, shuffle=False, sampler=sampler, collate_fn=collate_detection,
        drop_last=False, **_loader_kwargs(min(workers, os.cpu_count() or 1)),
    )  # fmt: skip
