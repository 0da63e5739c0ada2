"""The training sampler: which sample each step sees, and with which epoch, mosaic state and partner pool.

It lives apart from the loader (which builds it) and the training view (which tells it the epoch): both import
it, and it needs neither -- only the :class:`EpochState` the view exposes.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np
from torch.utils.data import DistributedSampler, Sampler

__all__ = ["EpochSampler", "EpochState"]


class EpochState(Protocol):
    """What the sampler reads of the dataset it samples (:class:`~cspdet.data.views.TrainDataset` has it): its
    length, the current epoch and whether the strong (mosaic / MixUp) augmentation is on."""

    epoch: int
    strong: bool

    def __len__(self) -> int: ...


class EpochSampler(Sampler):
    """Yields ``(index, epoch, strong, pool)`` keys for a :class:`~cspdet.data.views.TrainDataset`: a seeded,
    per-epoch shuffle (``DistributedSampler`` semantics: each of ``world_size`` ranks gets an equal share) tagged
    with the epoch and mosaic state that were current when iteration started.

    ``pool``: this rank's order is cut into blocks of about ``pool`` consecutive samples (``n / round(n /
    pool)`` each, so no tiny last block) and every key carries its block as a tuple; mosaic/MixUp partners
    are drawn from it. Each image is thus a partner as often as before (partners are still uniform over the
    epoch), but the images one block needs fit a small buffer, so each is decoded about once. ``pool=0``
    yields ``(index, epoch, strong)`` keys: partners from the whole dataset.
    """

    def __init__(
        self, dataset: EpochState, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True,
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
