"""Tests for cspdet/data/sampler.py: the epoch sampler needs only the epoch state of what it samples."""

from __future__ import annotations

from dataclasses import dataclass

from cspdet.data.sampler import EpochSampler


@dataclass
class _State:
    """The :class:`~cspdet.data.sampler.EpochState` of a 10-sample dataset (no images, no training view)."""

    size: int = 10
    epoch: int = 0
    strong: bool = True

    def __len__(self) -> int:
        return self.size


def test_ranks_share_the_epoch_and_keys_carry_the_state_at_iteration_start():
    state = _State(epoch=3, strong=False)
    ranks = [EpochSampler(state, seed=5, rank=r, world_size=2, pool=0) for r in range(2)]
    keys = [list(s) for s in ranks]
    assert all(len(k) == len(s) == 5 for k, s in zip(keys, ranks))
    assert sorted(i for k in keys for i, _, _ in k) == list(range(10))  # a partition of the dataset
    assert {(e, strong) for k in keys for _, e, strong in k} == {(3, False)}


def test_the_order_is_seeded_per_epoch_and_pools_are_consecutive_blocks():
    state = _State(size=11)
    sampler = EpochSampler(state, seed=0, pool=4)
    first = [k[0] for k in sampler]
    assert first == [k[0] for k in EpochSampler(state, seed=0, pool=4)]  # same seed, epoch: same order
    sampler.set_epoch(1)
    assert sorted(k[0] for k in sampler) == list(range(11)) and [k[0] for k in sampler] != first
    pools = []
    for index, _, _, pool in sampler:
        assert index in pool
        if not pools or pools[-1] is not pool:
            pools.append(pool)
    assert [len(p) for p in pools] == [4, 4, 3]  # round(11 / 4) = 3 blocks of 11 / 3: no tiny last block
    assert [i for p in pools for i in p] == [k[0] for k in sampler]
