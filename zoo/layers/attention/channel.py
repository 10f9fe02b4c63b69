"""Channel group attention (DaViT, Ding et al., ECCV 2022): attention among the channels of each head group,
with every spatial token as a feature dimension, so global context mixes at a cost linear in the tokens.

It is dense attention on transposed tensors: the released DaViT weights use keys as the queries of the
channel attention and queries as its values, i.e. for one head with q, k, v of shape (N, d):
    out = (softmax(scale * k^T v) @ q^T)^T = q @ softmax(scale * k^T v)^T,  scale = d ** -0.5.
The second form is what runs: two plain matmuls, the output in token-major (N, d) rows, so merging heads for
the projection copies d-float rows instead of transposing (N x d) blocks (the attention itself is a d x d
matrix, so no fused attention kernel applies: SDPA's take head dims up to 256, here the "head dim" is N).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..mlp import map_linear

__all__ = ['channel_attention', 'ChannelAttention']


def channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    """q, k, v: (B, heads, N, d) -> (B, heads, N, d); a (d x d) channel affinity per head, softmax over channels.

    scale defaults to d ** -0.5 (the head width, not the token count)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    attn = torch.softmax(scale * (k.transpose(-2, -1) @ v), dim=-1)
    return q @ attn.transpose(-2, -1)


class ChannelAttention(nn.Module):
    """DaViT channel group attention on channels-last tokens (B, ..., C); `num_heads` channel groups."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, proj_drop: float = 0., **_):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        B, C = shape[0], shape[-1]
        q, k, v = map_linear(self.qkv, x).reshape(B, -1, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        x = channel_attention(q, k, v).transpose(1, 2).reshape(shape)  # a copy with dense rows: proj runs one GEMM
        return self.proj_drop(map_linear(self.proj, x))
