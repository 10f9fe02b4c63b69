"""HiLo attention (LITv2, Pan et al., NeurIPS 2022): heads split between local windows and pooled global attention.

A fraction `alpha` of the heads (rounded down) forms the Lo-Fi branch: every query attends to keys/values
computed from the s x s average-pooled map (s = `window_size`). The other heads form the Hi-Fi branch:
self-attention inside non-overlapping s x s windows, without position bias. Each branch has its own
projections; the outputs are concatenated along channels (Hi-Fi first). s = 1 makes every head Lo-Fi
without pooling, i.e. plain multi-head self-attention (LITv2's last stage).

Odd sizes follow the authors' detection/segmentation code: the map is zero-padded at the bottom/right to a
multiple of s, both branches run on the padded map (padded tokens are neither masked as Hi-Fi keys nor
excluded from the Lo-Fi pooling), and the output is cropped back. The window helpers of window.py are
reused; `WindowMixer` is not, because it masks padded keys and LITv2 does not.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dense import dense_attention
from .window import window_partition, window_reverse

__all__ = ['hifi_attention', 'lofi_attention', 'HiLo']


def hifi_attention(qkv: torch.Tensor, num_heads: int, window_size: int, scale: Optional[float] = None) -> torch.Tensor:
    """Hi-Fi: attention inside non-overlapping windows.

    qkv: (B, H, W, 3 * heads * d) map, H and W multiples of `window_size`. Returns (B, H, W, heads * d)."""
    B, H, W, _ = qkv.shape
    win = (window_size, window_size)
    windows = window_partition(qkv, win)  # B, nW, N, 3 * heads * d
    q, k, v = windows.unflatten(-1, (3, num_heads, -1)).permute(3, 0, 1, 4, 2, 5)  # B, nW, heads, N, d
    out = dense_attention(q, k, v, scale=scale).transpose(2, 3).flatten(-2)  # B, nW, N, heads * d
    return window_reverse(out, win, H, W)


def lofi_attention(q: torch.Tensor, kv: torch.Tensor, num_heads: int, scale: Optional[float] = None) -> torch.Tensor:
    """Lo-Fi: every query attends to a (pooled) set of keys/values.

    q: (B, Lq, heads * d), kv: (B, Lk, 2 * heads * d) (k then v). Returns (B, Lq, heads * d)."""
    q = q.unflatten(-1, (num_heads, -1)).transpose(1, 2)  # B, heads, Lq, d
    k, v = kv.unflatten(-1, (2, num_heads, -1)).permute(2, 0, 3, 1, 4)  # B, heads, Lk, d
    return dense_attention(q, k, v, scale=scale).transpose(1, 2).flatten(-2)


class HiLo(nn.Module):
    """HiLo attention on (B, H, W, C) maps (parameter names as in ziplab/LITv2)."""

    def __init__(self, dim: int, num_heads: int = 8, window_size: int = 2, alpha: float = 0.5,
                 qkv_bias: bool = False, qk_scale: Optional[float] = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} must be divisible by num_heads {num_heads}')
        head_dim = dim // num_heads
        self.dim = dim
        self.ws = window_size
        self.l_heads = num_heads if window_size == 1 else int(num_heads * alpha)
        self.h_heads = num_heads - self.l_heads
        self.l_dim, self.h_dim = self.l_heads * head_dim, self.h_heads * head_dim
        self.scale = qk_scale or head_dim ** -0.5
        if self.l_heads > 0:
            self.l_q = nn.Linear(dim, self.l_dim, bias=qkv_bias)
            self.l_kv = nn.Linear(dim, 2 * self.l_dim, bias=qkv_bias)
            self.l_proj = nn.Linear(self.l_dim, self.l_dim)
        if self.h_heads > 0:
            self.h_qkv = nn.Linear(dim, 3 * self.h_dim, bias=qkv_bias)
            self.h_proj = nn.Linear(self.h_dim, self.h_dim)

    def hifi(self, x: torch.Tensor) -> torch.Tensor:
        return self.h_proj(hifi_attention(self.h_qkv(x), self.h_heads, self.ws, self.scale))

    def lofi(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        pooled = x if self.ws == 1 else F.avg_pool2d(x.permute(0, 3, 1, 2), self.ws).permute(0, 2, 3, 1)
        out = lofi_attention(self.l_q(x).flatten(1, 2), self.l_kv(pooled).flatten(1, 2), self.l_heads, self.scale)
        return self.l_proj(out.view(B, H, W, self.l_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        pad_h, pad_w = (-H) % self.ws, (-W) % self.ws
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        outs = []
        if self.h_heads > 0:
            outs.append(self.hifi(x))
        if self.l_heads > 0:
            outs.append(self.lofi(x))
        x = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        if pad_h or pad_w:
            x = x[:, :H, :W].contiguous()
        return x

    def extra_repr(self) -> str:
        return f'dim={self.dim}, window_size={self.ws}, hi_heads={self.h_heads}, lo_heads={self.l_heads}'
