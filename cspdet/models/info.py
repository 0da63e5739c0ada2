"""Model size and cost: parameter count and FLOPs (counted as 2 x multiply-accumulates, YOLOX's convention)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "count_flops", "model_info"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BN running statistics are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(model: nn.Module, img_size: int | Sequence[int] = 640, in_channels: int = 3) -> int:
    """FLOPs of one eval-mode forward pass on a single (1, in_channels, H, W) input.

    Counted with ``torch.utils.flop_counter`` (convolutions and matrix products, 2 FLOPs per multiply-add):
    the convention of YOLOX's tables (thop MACs x 2), so the numbers compare directly (YOLOX-S at 640:
    26.8 G). Element-wise ops (BN, activations, decoding) are not counted, as in YOLOX.

    Args:
        img_size: H (= W) or (H, W) of the input.
    """
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    param = next(model.parameters(), None)
    x = torch.zeros(1, in_channels, h, w, device=param.device if param is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def model_info(model: nn.Module, img_size: int | Sequence[int] = 640) -> dict[str, float]:
    """Summary for logs: ``params`` (count), ``params_m`` (millions), ``gflops`` at ``img_size``."""
    params = count_parameters(model)
    flops = count_flops(model, img_size)
    return {"params": params, "params_m": params / 1e6, "gflops": flops / 1e9}
