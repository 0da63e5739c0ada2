"""ImageFolder classification data (``root/<split>/<class>/*.jpg``, ImageNet's layout) for backbone pretraining.

Images are read with OpenCV as (H, W, 3) uint8 RGB (:func:`cspdet.data.image_io.read_image`). Augmentation is
the usual ImageNet recipe: random resized crop (area 8-100 %, aspect 3/4-4/3) + horizontal flip for training,
resize to ``img_size / crop_pct`` + centre crop for validation. The loader yields uint8 tensors; mean/std
normalisation happens on the device in :mod:`cspdet.engine.classify`.

Every random choice of a sample is drawn from a generator seeded by ``(seed, epoch, index)``, so the
augmentations do not depend on the number of workers or on which process loads the sample, and a resumed
run sees exactly the crops the uninterrupted run would have.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .image_io import IMAGE_SUFFIXES, ImageReadError, read_image

__all__ = ["ImageFolderDataset", "ImageFolderError", "build_classification_loader", "random_resized_crop_box"]


class ImageFolderError(ValueError):
    """An ImageFolder root that cannot be used (missing, empty, classes that differ between splits)."""


class ImageFolderDataset(Dataset):
    """Samples ``root/<class>/<image>``; classes are the sub-directory names in sorted order.

    Args:
        root: split directory (e.g. ``imagenet/train``).
        img_size: output side length S.
        train: random resized crop + flip when True, resize + centre crop otherwise.
        class_names: expected classes (e.g. the train split's, for the val split); a mismatch is an error.
        seed: base seed of the per-sample augmentation generators.
        crop_pct: validation centre-crop fraction (ImageNet convention 0.875).

    ``dataset[i]`` -> (image uint8 (3, S, S) RGB, label int).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        img_size: int = 224,
        train: bool = True,
        class_names: list[str] | None = None,
        seed: int = 0,
        crop_pct: float = 0.875,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_prob: float = 0.5,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ImageFolderError(
                f"{self.root}: ImageFolder split directory not found (expected <root>/<class>/*.jpg)"
            )
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not found:
            raise ImageFolderError(f"{self.root}: no class sub-directories (expected <root>/<class>/*.jpg)")
        if class_names is not None and list(class_names) != found:
            missing = sorted(set(class_names) - set(found))
            extra = sorted(set(found) - set(class_names))
            raise ImageFolderError(
                f"{self.root}: classes differ from the training split (missing: {missing[:5] or 'none'}; "
                f"extra: {extra[:5] or 'none'})"
            )
        self.class_names = found
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(found):
            files = sorted(p for p in (self.root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            self.samples += [(str(p), label) for p in files]
        if not self.samples:
            raise ImageFolderError(f"{self.root}: class directories contain no images ({', '.join(IMAGE_SUFFIXES)})")
        self.img_size = int(img_size)
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.crop_pct = crop_pct
        self.scale = scale
        self.ratio = ratio
        self.flip_prob = flip_prob

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (call before iterating; workers are re-created per epoch)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            image = read_image(path)
        except ImageReadError as err:
            raise ImageFolderError(str(err)) from None
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            x0, y0, w, h = random_resized_crop_box(image.shape[0], image.shape[1], rng, self.scale, self.ratio)
            image = cv2.resize(image[y0:y0 + h, x0:x0 + w], (self.img_size, self.img_size),
                               interpolation=cv2.INTER_LINEAR)
            if rng.random() < self.flip_prob:
                image = image[:, ::-1]
        else:
            image = _resize_center_crop(image, self.img_size, self.crop_pct)
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous(), label


def random_resized_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """Crop ``(x0, y0, w, h)`` covering a random area fraction in ``scale`` with aspect (w/h) log-uniform in
    ``ratio``; after 10 failed draws, the largest centred crop with an aspect inside ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            x0 = int(rng.integers(0, width - w + 1))
            y0 = int(rng.integers(0, height - h + 1))
            return x0, y0, w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _resize_center_crop(image: np.ndarray, size: int, crop_pct: float) -> np.ndarray:
    short = int(math.floor(size / crop_pct))
    h, w = image.shape[:2]
    r = short / min(h, w)
    nh, nw = max(size, round(h * r)), max(size, round(w * r))
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    return image[y0:y0 + size, x0:x0 + size]


def build_classification_loader(
    dataset: ImageFolderDataset,
    batch_size: int,
    workers: int = 0,
    train: bool = True,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Loader over ``dataset`` sharded by rank (``batch_size`` is per process).

    Training shuffles with a permutation of ``(seed, epoch)`` (call ``loader.sampler.set_epoch`` and
    ``dataset.set_epoch`` each epoch) and drops the last incomplete batch; validation keeps every sample
    (ranks may pad with repeats to equal length, as ``DistributedSampler`` does).

    Batches: (images uint8 (B, 3, S, S) RGB, labels int64 (B,)).
    """
    # DistributedSampler works without a process group when rank/world_size are given; using it for one
    # process too keeps the single- and multi-process shuffles the same function of (seed, epoch).
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed,
                                 drop_last=False)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=train,
        persistent_workers=False,  # workers must see the dataset's epoch, set before each epoch
    )
