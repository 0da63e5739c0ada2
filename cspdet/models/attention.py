"""Position-sensitive attention blocks of YOLO11 / YOLO26: :class:`Attention`, :class:`PSABlock`, :class:`C2PSA`.

A CNN detector at n / s scale sees the whole image only through its deepest, stride-32 map; one multi-head
self-attention over that map's H * W positions (400 at 640) gives every position a global view for a small cost.
YOLO11 puts a :class:`C2PSA` after the backbone's SPPF; YOLO26 also puts a :class:`PSABlock` inside the last
neck stage (``C3k2Stage(attn=True)``).

The attention is written with plain ``matmul`` + ``softmax`` on NCHW tensors (no ``scaled_dot_product_attention``)
so ONNX, OpenVINO and TorchScript export it unchanged on every runtime; every conv is a
:class:`~cspdet.models.layers.ConvBNAct`, so :func:`~cspdet.models.fuse_conv_bn` folds their norms.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ActLayer, ConvBNAct, NormLayer, YoloxBatchNorm2d

__all__ = ["Attention", "C2PSA", "PSABlock"]


class Attention(nn.Module):
    """Multi-head self-attention over the H * W positions of a map, plus a depthwise 3x3 positional term.

    ``qkv`` 1x1 (linear) dim -> heads * (2 * key_dim + head_dim), head_dim = dim // num_heads, key_dim =
    ``int(head_dim * attn_ratio)``; per head ``softmax(q^T k / sqrt(key_dim))`` weights the values; the positional
    term is a depthwise 3x3 conv of the values (``pe``, linear); ``proj`` 1x1 (linear) mixes the heads.
    Layout and parameter count are YOLO11's ``Attention``.

    Shapes: (B, dim, H, W) -> (B, dim, H, W).
    """

    def __init__(self, dim: int, num_heads: int = 8, attn_ratio: float = 0.5,
                 norm: NormLayer = YoloxBatchNorm2d) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"Attention: dim={dim} must be a positive multiple of num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        if self.key_dim < 1:
            raise ValueError(f"Attention: head_dim={self.head_dim} * attn_ratio={attn_ratio} leaves no key channels")
        self.scale = self.key_dim**-0.5
        self.qkv = ConvBNAct(dim, dim + 2 * self.key_dim * num_heads, 1, norm=norm, act=None)
        self.proj = ConvBNAct(dim, dim, 1, norm=norm, act=None)
        self.pe = ConvBNAct(dim, dim, 3, groups=dim, norm=norm, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, h * w).split(
            [self.key_dim, self.key_dim, self.head_dim], dim=2)
        attn = ((q * self.scale).transpose(-2, -1) @ k).softmax(dim=-1)  # (B, heads, N, N)
        out = (v @ attn.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(out)


class PSABlock(nn.Module):
    """Transformer-style block: ``x + Attention(x)``, then ``x + FFN(x)`` (FFN: 1x1 to 2c with ``act``, 1x1 back,
    linear); without ``shortcut`` the two adds are dropped. YOLO11's ``PSABlock``.

    Shapes: (B, channels, H, W) -> (B, channels, H, W).
    """

    def __init__(self, channels: int, attn_ratio: float = 0.5, num_heads: int = 4, shortcut: bool = True,
                 norm: NormLayer = YoloxBatchNorm2d, act: ActLayer = nn.SiLU) -> None:
        super().__init__()
        self.attn = Attention(channels, num_heads, attn_ratio, norm=norm)
        self.ffn = nn.Sequential(ConvBNAct(channels, 2 * channels, 1, norm=norm, act=act),
                                 ConvBNAct(2 * channels, channels, 1, norm=norm, act=None))
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x) if self.shortcut else self.attn(x)
        return x + self.ffn(x) if self.shortcut else self.ffn(x)


def psa_heads(channels: int) -> int:
    """YOLO11's head count for a PSA block of ``channels``: one head per 64 channels, at least one."""
    return max(channels // 64, 1)


class C2PSA(nn.Module):
    """CSP stage of :class:`PSABlock`\\ s (YOLO11's ``C2PSA``): 1x1 expand to 2c (c = ``int(channels * expansion)``),
    split, ``num_blocks`` PSA blocks on one half, concat with the other, 1x1 fuse back to ``channels``.

    Shapes: (B, channels, H, W) -> (B, channels, H, W).
    """

    def __init__(self, channels: int, num_blocks: int = 1, expansion: float = 0.5,
                 norm: NormLayer = YoloxBatchNorm2d, act: ActLayer = nn.SiLU) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.hidden = hidden
        self.expand = ConvBNAct(channels, 2 * hidden, 1, norm=norm, act=act)
        self.blocks = nn.Sequential(*(PSABlock(hidden, 0.5, psa_heads(hidden), norm=norm, act=act)
                                      for _ in range(num_blocks)))
        self.fuse = ConvBNAct(2 * hidden, channels, 1, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.expand(x).split((self.hidden, self.hidden), dim=1)
        return self.fuse(torch.cat((a, self.blocks(b)), 1))
