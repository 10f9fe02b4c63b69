"""L2ViT's mixers (Zheng et al., "The Linear Attention Resurrection in Vision Transformer"): enhanced linear global
attention (LGA) with its local concentration module (LCM), and local window attention (LWA) without a
position bias.

LGA, with a ReLU feature map on q and k and a learned per-head temperature t:

    out_i = t * q_i (K^T V) / max(q_i . sum_j k_j, clamp)        (clamp = 100, as released)

The reductions (K^T V, sum_j k_j, the normaliser) run in fp32 under autocast. LCM (two depthwise 7x7 convs
with GELU and BatchNorm between) re-concentrates the dispersed global attention on local detail.
Maps are channels-last (B, H, W, C) and any H, W works.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn

from .dense import dense_attention
from .window import WindowMixer
from ..mlp import map_linear

__all__ = ['relu_linear_attention', 'LinearGlobalAttention', 'LocalConcentration', 'LocalWindowAttention']

Size2 = Tuple[int, int]


def relu_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor,
                          clamp_min: float = 100.) -> torch.Tensor:
    """ReLU linear attention. q, k, v: (B, heads, N, d); temperature: broadcastable to (heads, d, d), e.g.
    (heads, 1, 1). Returns (B, heads, N, d), computed in fp32."""
    dtype = q.dtype
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v = q.float().relu(), k.float().relu(), v.float()
        denom = (q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1)).clamp(min=clamp_min)  # B, heads, N, 1
        kv = (k.transpose(-2, -1) @ v) * temperature.float()                             # B, heads, d, d
        out = (q @ kv) / denom
    return out.to(dtype)


class LinearGlobalAttention(nn.Module):
    """L2ViT's linear global attention on (B, H, W, C) maps. Keys: qkv, temperature, proj."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0., proj_drop: float = 0.,
                 clamp_min: float = 100., **_unused):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.clamp_min = clamp_min
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1) * self.head_dim ** -0.5)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q, k, v = map_linear(self.qkv, x).view(B, H * W, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = relu_linear_attention(q, k, v, self.temperature, self.clamp_min)
        return self.proj_drop(map_linear(self.proj, out.transpose(1, 2).reshape(B, H, W, C)))


class LocalConcentration(nn.Module):
    """LCM: depthwise kxk conv -> GELU -> BatchNorm -> depthwise kxk conv, on (B, H, W, C) maps."""

    def __init__(self, dim: int, kernel_size: int = 7):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.bn(self.act(self.conv1(x.permute(0, 3, 1, 2)))))
        return x.permute(0, 2, 3, 1)


class LocalWindowAttention(WindowMixer):
    """L2ViT's LWA: multi-head self-attention in non-overlapping windows, no position bias (position comes from
    the blocks' conditional position encodings). Padded tokens are masked out as keys (the release leaves
    zero-padded tokens unmasked; both agree whenever the map is a window multiple, as at 224 and 384)."""

    def __init__(self, dim: int, num_heads: int, window_size: Size2 = (7, 7), shift_size: Size2 = (0, 0),
                 qkv_bias: bool = True, attn_drop: float = 0., proj_drop: float = 0.):
        super().__init__(window_size, shift_size)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def mix(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        B, nW, N, _ = x.shape
        q, k, v = map_linear(self.qkv, x).view(B, nW, N, 3, self.num_heads, self.head_dim).permute(3, 0, 1, 4, 2, 5)
        bias = None if mask is None else mask.unsqueeze(1)  # nW, 1, N, N
        x = dense_attention(q, k, v, bias=bias, dropout_p=self.attn_drop if self.training else 0.)
        return self.proj_drop(map_linear(self.proj, x.transpose(2, 3).reshape(B, nW, N, -1)))
