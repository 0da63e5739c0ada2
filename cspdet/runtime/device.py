"""The device a model runs on, from ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` (shared by inference and training)."""

from __future__ import annotations

import torch

__all__ = ["DeviceError", "select_device"]


class DeviceError(RuntimeError):
    """A device that does not exist here or is spelled wrongly; the message says which."""


def select_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``cuda`` -> ``cuda:<local_rank>``."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"{spec!r} requested but CUDA is not available here (use cpu)")
        if spec == "cuda":
            spec = f"cuda:{local_rank}"
        device = torch.device(spec)
        torch.cuda.set_device(device)
        return device
    if spec != "cpu":
        raise DeviceError(f"{spec!r}: expected auto, cpu, cuda or cuda:N")
    return torch.device("cpu")
