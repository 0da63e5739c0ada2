"""Thin helpers over ``torch.distributed`` for runs launched with ``torchrun``.

``torchrun --nproc_per_node=N tools/train.py CONFIG`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` for
every process; :func:`init_distributed` reads them and joins the process group (NCCL when training on
CUDA, Gloo on CPU). Multi-node runs use torchrun's own rendezvous flags on every node, e.g.::

    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 \\
        tools/train.py configs/cspdarknet_yolo.yaml
    # (same command with --node_rank=1 on the second node; or --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT)

The global batch (``train.batch_size``) is split over all ``nnodes x nproc_per_node`` processes. Every process
reads the dataset and, with ``--resume``, the checkpoint itself, so on several nodes the data and the run
directory must be at the same path on each node (a shared file system); only global rank 0 writes files.
If the nodes have several network interfaces, pick the one to use with ``NCCL_SOCKET_IFNAME`` (GPU) or
``GLOO_SOCKET_IFNAME`` (CPU).

Every helper is a no-op (or the identity) in a single process, so callers never branch on the world size.
Every collective must be reached by all ranks: call these helpers unconditionally, never under
``if rank == 0``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..runtime.device import DeviceError, select_device

__all__ = [
    "DeviceError",
    "DistInfo",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "destroy_distributed",
    "env_dist_info",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "select_device",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """Rank, local rank and world size from torchrun's environment variables (defaults: one process)."""
    try:
        return DistInfo(
            rank=int(os.environ.get("RANK", 0)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
        )
    except ValueError as err:
        raise RuntimeError(f"bad torchrun environment (RANK/LOCAL_RANK/WORLD_SIZE): {err}") from None


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group when launched by torchrun with ``WORLD_SIZE > 1``.

    The backend is NCCL when ``device`` resolves to CUDA and Gloo otherwise. Already-initialised groups are
    reused. Returns the :class:`DistInfo` of this process.
    """
    info = env_dist_info()
    if info.world_size <= 1 or dist.is_initialized():
        return info
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return info


def destroy_distributed() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a new tensor; the input is left unchanged)."""
    if not is_distributed():
        return tensor.clone()
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
