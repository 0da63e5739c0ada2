"""How many intra-op CPU threads and loader worker processes a training process uses.

torch starts as many OpenMP threads as the machine has cores, whatever else runs. A training process also
runs its data-loader workers (``data.workers`` processes decoding and augmenting), and on a laptop or a
shared server other programs run too. OpenMP threads busy-wait for each other at every operator: when one of
them is descheduled (a loader worker or another program took its core) the others spin until it returns, so
an oversubscribed CPU does not slow training a little but many times (measured: ``benchmarks/results/measurements.md``).

The rule (:func:`plan_threads`), on CPU: threads = the cores this process may use (its CPU affinity,
``os.sched_getaffinity``, divided among the torchrun processes of the node) minus its training loader
workers, at least 1, and never more than torch would use anyway (so ``OMP_NUM_THREADS`` or an earlier
``torch.set_num_threads`` still caps it). An explicit ``train.threads`` / ``pretrain.threads`` wins. On CUDA the
model runs on the GPU and torch's default is kept. The run header says what was chosen and why.

Loader workers (:func:`plan_workers`): ``data.workers`` when the config sets it; left unset (``null``), none when
the model runs on a CPU and 4 on a GPU. On a CPU the forward and backward pass dominate an iteration (the whole
augmentation pipeline runs tens of times faster than training), so a worker process only takes a core from torch's
threads and an epoch gets slower, not faster (measured: ``benchmarks/results/measurements.md``). Ultralytics'
trainer makes the same choice on a CPU. On a GPU the loader must keep up with a fast device, so workers decode in
parallel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..runtime import cpu

__all__ = ["AUTO_GPU_WORKERS", "ThreadPlan", "apply_threads", "available_cores", "plan_threads", "plan_workers",
           "resolve_bf16"]

AUTO_GPU_WORKERS = 4
"""Loader workers of a GPU run whose ``data.workers`` is unset (YOLOX's and Ultralytics' default is in this range)."""


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    reason: str
    """How the number was chosen, for the run header."""


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def plan_workers(device_type: str, requested: int | None, cores: int | None = None) -> int:
    """Loader worker processes (the rule in the module docstring): ``requested`` when set, else 0 on ``"cpu"`` and
    :data:`AUTO_GPU_WORKERS` elsewhere; never more than the machine's cores (``cores``, default: this one's)."""
    workers = requested if requested is not None else (0 if device_type == "cpu" else AUTO_GPU_WORKERS)
    cap = (os.cpu_count() or 1) if cores is None else cores  # as the loaders have always capped them
    return min(workers, cap)


def plan_threads(
    device_type: str,
    workers: int,
    requested: int | None = None,
    key: str = "train.threads",
    local_processes: int = 1,
    cores: int | None = None,
    current: int | None = None,
) -> ThreadPlan:
    """The intra-op thread count of one training process (the rule in the module docstring).

    Args:
        device_type: ``"cpu"`` or ``"cuda"``.
        workers: training data-loader worker processes of this process.
        requested: the config's explicit setting (``key``), or None for the rule.
        local_processes: training processes on this machine (torchrun's ``LOCAL_WORLD_SIZE``).
        cores, current: the available cores and torch's present thread count (default: this machine's).
    """
    current = torch.get_num_threads() if current is None else current
    if requested is not None:
        return ThreadPlan(requested, f"{key}={requested}")
    if device_type != "cpu":
        return ThreadPlan(current, f"torch default on {device_type}")
    cores = available_cores() if cores is None else cores
    share = max(1, cores // max(1, local_processes))
    free = max(1, share - workers)
    where = f"{cores} cores" + (f" / {local_processes} processes" if local_processes > 1 else "")
    reason = f"auto: {where} - {workers} loader worker{'s' if workers != 1 else ''}"
    if current < free:
        return ThreadPlan(current, f"{reason} = {free}, capped at {current} by OMP_NUM_THREADS / torch.set_num_threads")
    return ThreadPlan(free, f"{reason}; set {key} to choose")


def apply_threads(plan: ThreadPlan) -> None:
    """Set torch's intra-op thread count of this process to ``plan.threads``."""
    if torch.get_num_threads() != plan.threads:
        torch.set_num_threads(plan.threads)


def resolve_bf16(setting: bool | str, device_type: str) -> bool:
    """``train.bf16`` / ``pretrain.bf16`` -> whether CPU bf16 autocast is on: ``true`` / ``false`` as given,
    ``auto`` = on a CPU with native bf16 (:func:`cspdet.runtime.cpu.native_bf16`: AVX512-BF16 or AMX; there bf16
    autocast trains faster than fp32, ``benchmarks/results/learning_panel.md``; elsewhere oneDNN emulates bf16,
    slower than fp32), off elsewhere (CUDA runs use ``amp``)."""
    if setting == "auto":
        return device_type == "cpu" and cpu.native_bf16()
    return bool(setting)
