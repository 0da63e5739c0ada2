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
consecutive samples of the epoch's shuffled order that holds it (see :class:`~cspdet.data.sampler.EpochSampler`);
``0`` draws them from the whole dataset, as YOLOX does. Larger pools mix more widely and cost more buffer memory (about
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
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.utils.data
from torch.utils.data import DataLoader, DistributedSampler

from ..det.targets import ImageTargets, Targets
from ..progress import progress_bar
from .datasets import DetectionDataset
from .image_io import ImageReadError, image_size
from .problems import DatasetError, DatasetWarning, user_stacklevel
from .sampler import EpochSampler
from .transforms import AugmentConfig, fit_size
from .views import DetectionItem, TrainDataset, ValDataset

__all__ = [
    "DetectionLoader",
    "collate_detection",
    "build_train_loader",
    "build_val_loader",
    "cache_ram_estimate",
    "check_cache_memory",
]


def collate_detection(batch: Sequence[DetectionItem | tuple]) -> dict[str, Any]:
    """Stack samples (:class:`~cspdet.data.views.DetectionItem`, as the views yield them; the plain
    ``(image, targets, image_id, ratio, (h, w)[, problems])`` tuples of datasets written for earlier versions are
    read too) into the cspdet batch dict.

    Returns:
        images uint8 (B, 3, H, W) RGB; targets a :class:`~cspdet.det.targets.Targets` (boxes float32 (B, M, 4)
        xyxy input px, labels int64 (B, M), mask bool (B, M), zero padded, with M the largest box count in the
        batch, may be 0); target_mask: ``targets.mask`` again (deprecated: read ``targets.mask``); image_ids int64
        (B,); ratios float32 (B,); orig_sizes int64 (B, 2) (h, w). Only when a worker found bad images while
        producing the batch, also "problems": a list of :class:`~cspdet.data.DatasetProblem`, which
        :class:`DetectionLoader` removes and records in the main process.
    """
    items = [b if isinstance(b, DetectionItem) else _item(b) for b in batch]
    images = _stack_chw([b.image for b in items])
    targets = Targets.collate([_image_targets(b.targets) for b in items])
    return {
        "images": images,
        "targets": targets,
        "target_mask": targets.mask,
        "image_ids": torch.tensor([int(b.image_id) for b in items], dtype=torch.int64),
        "ratios": torch.tensor([float(b.ratio) for b in items], dtype=torch.float32),
        "orig_sizes": torch.tensor([[int(b.orig_size[0]), int(b.orig_size[1])] for b in items], dtype=torch.int64),
        **({"problems": problems} if (problems := [p for b in items for p in b.problems]) else {}),
    }


def _item(b: tuple) -> DetectionItem:
    """The :class:`DetectionItem` of a plain ``(image, targets, image_id, ratio, (h, w)[, problems])`` tuple."""
    if len(b) not in (5, 6):
        raise ValueError(f"collate_detection: a sample must be a DetectionItem or an (image, targets, image_id, "
                         f"ratio, (h, w)) tuple, got a {type(b).__name__} of length {len(b)}")
    return DetectionItem(b[0], b[1], b[2], b[3], b[4], tuple(b[5]) if len(b) > 5 else ())


def _image_targets(t: Any) -> ImageTargets:
    """A sample's targets: an :class:`ImageTargets`, or (from a dataset written for earlier versions) an (N, 5)
    ``[cls, x1, y1, x2, y2]`` array."""
    if isinstance(t, ImageTargets):
        return t
    a = np.asarray(t, np.float32)
    if a.size == 0:
        return ImageTargets.empty()
    if a.ndim != 2 or a.shape[1] != 5:
        raise ValueError(f"collate_detection: a sample's targets must be an ImageTargets or an (N, 5) "
                         f"[cls, x1, y1, x2, y2] array, got an array of shape {a.shape}")
    return ImageTargets(a[:, 1:], a[:, 0].astype(np.int64))


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
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except DatasetError as err:  # raised in a worker: torch re-raises it with the worker's traceback
                raise DatasetError(_worker_message(err)) from None
            problems = batch.pop("problems", None)
            if problems:
                source.record_problems(problems)
            yield batch
        new = len(source.skipped) - before
        if new:
            warnings.warn(
                f"{new} image problem(s) met while loading this pass (bad images were skipped: replaced by another "
                "sample in training, by a grey placeholder in evaluation); "
                + source.skipped.summary(hint="dataset.skipped, or `cspdet check DATASET`"),
                DatasetWarning,
                stacklevel=user_stacklevel(),
            )


def _worker_message(err: Exception) -> str:
    """The one-line message of an error a DataLoader worker raised (torch prepends "Caught ... in DataLoader
    worker process N" and the worker's traceback; its last line holds the original message)."""
    text = str(err)
    if "Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if last.startswith(("cspdet.", "DatasetError")) and ": " in last else last


def _worker_init(_: int) -> None:
    # Workers already run in parallel; OpenCV's own thread pool would only oversubscribe the cores.
    cv2.setNumThreads(0)
    torch.set_num_threads(1)


def _loader_kwargs(workers: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"num_workers": workers, "pin_memory": torch.cuda.is_available()}
    if workers > 0:
        kwargs.update(persistent_workers=True, worker_init_fn=_worker_init, prefetch_factor=2)
    return kwargs


def cache_ram_estimate(dataset: DetectionDataset, train_size: Sequence[int] | None = None) -> int:
    """Bytes a RAM cache of ``dataset`` holds once full: for training (``train_size`` given) each image fitted
    into ``train_size`` as RGBA (an image of unknown size counts as the whole ``train_size``), for evaluation
    each decoded RGB image (sizes not in the annotations are read from the file headers)."""
    total = 0
    table = dataset.records
    for i in range(len(table)):
        h, w = table.size(i)
        if train_size is not None:
            if h and w:
                _, h, w = fit_size(h, w, train_size)
            else:
                h, w = train_size
            total += h * w * 4
            continue
        if not (h and w):
            try:
                h, w = image_size(table.path(i))
            except ImageReadError:
                continue  # skipped when loaded
        total += h * w * 3
    return total


def check_cache_memory(train_set: DetectionDataset, val_set: DetectionDataset, train_size: Sequence[int],
                       processes: int = 1) -> str:
    """The RAM the caches of a training run will hold (every one of ``processes`` training processes on the
    machine keeps its own), checked against the memory available (:func:`~cspdet.data.cache.available_memory`).

    Returns a one-line note for the run header; raises :class:`~cspdet.config.ConfigError` (``data.cache``)
    when the caches would not fit, before any image is decoded.
    """
    from ..config import ConfigError
    from .cache import available_memory

    need = processes * (cache_ram_estimate(train_set, train_size) + cache_ram_estimate(val_set))
    free = available_memory()
    note = (f"RAM cache of {len(train_set)} train + {len(val_set)} val images: ~{_size_text(need)}"
            + (f" x {processes} processes" if processes > 1 else "")
            + (f" of {_size_text(free)} available" if free is not None else ""))
    if free is not None and need > free:
        raise ConfigError(f"data.cache: the {note}; set data.cache=false (or train on fewer images)")
    return note


def _size_text(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB"


def _warm_cache(dataset: DetectionDataset, workers: int, train: TrainDataset | None = None,
                progress: bool | None = False) -> None:
    """Decode every image into a RAM cache before workers fork, so they share it instead of each
    decoding (and holding) their own copy. For a training loader (``train``), the cache is filled with the
    fitted RGBA images the training transform uses (see :meth:`TrainDataset._decode_fitted`)."""
    cache = dataset.cache
    if cache is None or cache.mode != "ram" or workers == 0 or len(cache):
        return
    desc = f"cache {dataset.name}"
    # an undecodable image follows the dataset's one rule (warned and counted here, in the main process, once;
    # the forked workers inherit that it was reported) and is skipped again when a sample needs it
    decode = train._decode_fitted if train is not None else dataset.load_image
    for index in progress_bar(range(len(dataset)), progress, desc):
        dataset.try_load_sample(index, decode)


def build_train_loader(
    dataset: DetectionDataset,
    cfg: Any,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    workers: int | None = None,
    progress: bool | None = False,
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
        progress: a bar while a RAM cache is filled (None: when stderr is a terminal).

    ``loader.dataset`` is a :class:`TrainDataset` with ``set_epoch(epoch)`` and ``close_mosaic()``.
    Augmentation settings are the :class:`AugmentConfig` fields found on ``cfg`` (YOLOX defaults for the
    rest), including ``mosaic_pool`` (partner block size, default 64; 0 = partners from the whole
    dataset, see the module docstring). The loader is a :class:`DetectionLoader`: images that fail to decode
    in workers are counted in the main process's ``dataset.skipped``.
    """
    aug = cfg if isinstance(cfg, AugmentConfig) else AugmentConfig.from_config(cfg)
    if workers is None:  # the config's; unset (auto) means none here: only a trainer knows its device
        workers = int((cfg.get("workers") if isinstance(cfg, dict) else getattr(cfg, "workers", None)) or 0)
    workers = min(workers, os.cpu_count() or 1)
    train = TrainDataset(dataset, aug, seed=seed)
    sampler = EpochSampler(train, seed=seed, rank=rank, world_size=world_size, shuffle=True, pool=aug.mosaic_pool)
    train.sampler = sampler
    _warm_cache(dataset, workers, train, progress)
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
    progress: bool | None = False,
) -> DataLoader:
    """Evaluation loader: letterbox only, dataset order. With world_size > 1 each rank gets a share
    (DistributedSampler without shuffling; it pads by repeating images so all ranks have equal counts,
    so the evaluator should de-duplicate by image id when gathering). ``progress``: a bar while a RAM cache
    is filled."""
    val = ValDataset(dataset, img_size)
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(val, num_replicas=world_size, rank=rank, shuffle=False, drop_last=False)
    _warm_cache(dataset, workers, progress=progress)
    return DetectionLoader(
        val, batch_size=batch_size, shuffle=False, sampler=sampler, collate_fn=collate_detection,
        drop_last=False, **_loader_kwargs(min(workers, os.cpu_count() or 1)),
    )  # fmt: skip
