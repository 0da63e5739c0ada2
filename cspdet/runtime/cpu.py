"""The PyTorch CPU fast path: channels_last and, on CPUs that compute bf16 natively, bf16 autocast.

On a CPU with AMX, bf16 with channels_last runs the forward about twice as fast as fp32 (measured:
``benchmarks/results/measurements.md``). On CPUs without native bf16, oneDNN emulates bf16 convolutions and they
run several times slower, so bf16 is never chosen there (``precision="auto"`` picks it only when
:func:`native_bf16` is true). bf16 changes the predictions (scores move by ~1e-2), so the default everywhere stays
fp32; ask for ``precision="auto"`` / ``"bf16"``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from ..det.predictions import Predictions, to_deploy_layout
from ..models.contracts import HeadEvalDefaults
from .contracts import ModelFacade

__all__ = ["FastCPUDetector", "native_bf16", "resolve_precision"]

logger = logging.getLogger(__name__)


def native_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AMX-BF16 or AVX512-BF16 in ``/proc/cpuinfo``) and PyTorch
    has oneDNN; False elsewhere (including non-Linux systems, where it cannot tell)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(amx_bf16|avx512_bf16)\b", text) is not None


def resolve_precision(precision: str) -> str:
    """``"fp32"`` | ``"bf16"`` | ``"auto"`` (bf16 when :func:`native_bf16`, else fp32) -> ``"fp32"`` or ``"bf16"``.
    An explicit ``"bf16"`` on a CPU without native bf16 is honoured with a warning (it is much slower there)."""
    if precision not in ("fp32", "bf16", "auto"):
        raise ValueError(f"precision must be fp32, bf16 or auto, got {precision!r}")
    native = native_bf16()
    if precision == "auto":
        return "bf16" if native else "fp32"
    if precision == "bf16" and not native:
        logger.warning("this CPU has no native bf16 (no AMX-BF16 / AVX512-BF16): bf16 convolutions run several "
                       "times slower than fp32 here")
    return precision


class FastCPUDetector(ModelFacade):
    """A (fused) :class:`cspdet.models.Detector` run channels_last, optionally under bf16 autocast.

    Same interface as the detector for ``Predictor`` / ``COCOEvaluator`` (the
    :class:`~cspdet.runtime.contracts.InferenceModel` contract): ``forward(images (B, 3, H, W))`` -> (B, N, 5 + C)
    float32 decoded predictions in the deploy layout, :meth:`predictions`, :meth:`predict`, ``meta``,
    ``num_classes``, ``strides``, ``nms_free``, ``eval_defaults``, ``head``.
    """

    def __init__(self, detector: nn.Module, precision: str = "fp32", channels_last: bool = True) -> None:
        super().__init__()
        self.precision = resolve_precision(precision)
        self.channels_last = bool(channels_last)
        self.detector = detector.eval().to(memory_format=torch.channels_last) if channels_last else detector.eval()
        self.meta, self.head = detector.meta, detector.head

    @property
    def num_classes(self) -> int:
        return self.detector.num_classes

    @property
    def strides(self) -> tuple[int, ...]:
        return self.detector.strides

    @property
    def eval_defaults(self) -> HeadEvalDefaults:
        return self.detector.eval_defaults

    @property
    def nms_free(self) -> bool:
        return self.detector.nms_free

    @nms_free.setter
    def nms_free(self, value: bool) -> None:
        self.detector.nms_free = value

    def predictions(self, images: Tensor) -> Predictions:
        """(B, 3, H, W) float RGB 0..255 -> the head's float32 :class:`~cspdet.det.predictions.Predictions`."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.detector.predictions(images).float()

    def forward(self, images: Tensor) -> Tensor:
        return to_deploy_layout(self.predictions(images), self.num_classes)
