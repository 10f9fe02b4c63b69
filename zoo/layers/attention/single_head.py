"""Single-head self-attention on a partial channel split (SHViT, Yun & Ro, CVPR 2024).

Only the first `pdim` channels of a map are mixed by one global attention head (queries/keys of width
qk_dim, values of width pdim); the remaining channels pass through untouched, and a projection over all
channels mixes the two again.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
from timm.layers import GroupNorm1, create_act_layer

from ..conv import conv_bn
from .dense import dense_attention

__all__ = ['single_head_attention', 'SingleHeadAttention']


def single_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          scale: Optional[float] = None) -> torch.Tensor:
    """One global head over all positions of NCHW maps.

    q, k: (B, d_qk, H, W); v: (B, d_v, H, W). Returns (B, d_v, H, W) with
    out[:, :, p] = sum_p' softmax_p'(q[:, :, p] . k[:, :, p'] * scale) v[:, :, p'] (scale defaults to d_qk ** -0.5).
    Any H, W: attention is global, no windows or padding. Runs on `dense_attention` (SDPA / reference backends)."""
    B, dv, H, W = v.shape
    q, k, v = (t.flatten(2).transpose(1, 2).unsqueeze(1) for t in (q, k, v))  # (B, 1, N, d)
    x = dense_attention(q, k, v, scale=scale)
    return x.squeeze(1).transpose(1, 2).reshape(B, dv, H, W)


class SingleHeadAttention(nn.Module):
    """SHViT's SHSA on (B, C, H, W): x1 = x[:, :pdim] -> GroupNorm(1) -> 1x1 conv-BN to q, k, v ->
    single_head_attention; then act -> 1x1 conv-BN over concat(x1, x[:, pdim:]).

    Keys: pre_norm, qkv.{conv,bn}, proj.{conv,bn} (the official release's proj.1 is renamed on load)."""

    def __init__(self, dim: int, qk_dim: int, pdim: int, norm_layer: Callable = GroupNorm1,
                 act_layer: Callable = nn.ReLU):
        super().__init__()
        self.dim, self.qk_dim, self.pdim = dim, qk_dim, pdim
        self.scale = qk_dim ** -0.5
        self.pre_norm = norm_layer(pdim)
        self.qkv = conv_bn(pdim, 2 * qk_dim + pdim)
        self.act = create_act_layer(act_layer, inplace=True)  # on the concat, a fresh tensor
        self.proj = conv_bn(dim, dim, bn_weight_init=0.)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.split((self.pdim, self.dim - self.pdim), dim=1)
        q, k, v = self.qkv(self.pre_norm(x1)).split((self.qk_dim, self.qk_dim, self.pdim), dim=1)
        x1 = single_head_attention(q, k, v, scale=self.scale)
        return self.proj(self.act(torch.cat((x1, x2), dim=1)))
