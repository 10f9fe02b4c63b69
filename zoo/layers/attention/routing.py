"""Bi-level routing attention (BiFormer, Zhu et al., CVPR 2023) and BiFormer's global attention with LePE.

Bi-level routing attention on a (B, H, W, C) map split into S x S regions (S = `n_win`, a fixed number of
regions per side, so a region is (H / S) x (W / S) tokens):

1. region level: each region's mean query is compared with every region's mean key; the `topk` most
   similar regions are its routes (no gradient flows through the routing, as in the released models);
2. token level: every query token attends to all tokens of its routed regions (keys and values gathered),
   with the scale qk_dim ** -0.5 the authors use (the full q/k width, not the head width).

The `BiLevelRoutingAttention` module adds LCE (local context enhancement): a depthwise conv on the value
map added to the attention output before the output projection. Maps whose H, W are not multiples of S are
zero-padded at the bottom/right and cropped back afterwards; like the authors' `auto_pad` (their detection /
segmentation setting), padded tokens are not masked: they take part in region means and as keys.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dense import dense_attention
from .dispatch import AttentionOp
from .window import window_partition, window_reverse
from ..mlp import map_linear

__all__ = ['routing_attention', 'region_routing', 'BiLevelRoutingAttention', 'AttentionLePE']

routing_attention = AttentionOp(
    'routing',
    """Bi-level routing attention.

    q, k: (B, H, W, heads * d_qk), v: (B, H, W, heads * d_v) maps with H, W multiples of `n_win`;
    `num_heads` heads; `topk` routed regions per region; `scale` multiplies q @ k^T (default d_qk ** -0.5
    per head; BiFormer passes (heads * d_qk) ** -0.5). Returns (B, H, W, heads * d_v).""",
)


def _regions(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, S*S, rh*rw, C): S x S regions, row-major, tokens row-major inside a region."""
    B, H, W, _ = x.shape
    return window_partition(x, (H // n_win, W // n_win))


@torch.no_grad()
def region_routing(q: torch.Tensor, k: torch.Tensor, n_win: int, topk: int, scale: float) -> torch.Tensor:
    """(B, S*S, topk) indices of the regions each region routes to (top-k of mean-query x mean-key affinity).

    q, k: (B, H, W, C) maps. Not differentiable (BiFormer's routing is hard and detached)."""
    B, H, W, C = q.shape
    rh, rw = H // n_win, W // n_win
    q_r = q.reshape(B, n_win, rh, n_win, rw, C).permute(0, 1, 3, 2, 4, 5).mean((3, 4)).flatten(1, 2)
    k_r = k.reshape(B, n_win, rh, n_win, rw, C).permute(0, 1, 3, 2, 4, 5).mean((3, 4)).flatten(1, 2)
    affinity = (q_r * scale) @ k_r.transpose(-2, -1)  # B, S*S, S*S
    return torch.topk(affinity, k=topk, dim=-1).indices


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(..., L, heads * d) -> (..., heads, L, d)"""
    return x.unflatten(-1, (num_heads, -1)).transpose(-3, -2)


def _route(q, k, n_win: int, topk: int, num_heads: int, scale: Optional[float]):
    """The attention scale (default per-head d_qk ** -0.5) and the (B, S*S, topk) routes, routed with that scale."""
    scale = (q.shape[-1] // num_heads) ** -0.5 if scale is None else scale
    return scale, region_routing(q, k, n_win, topk, scale)


@routing_attention.register('gather', priority=10)
def _routing_gather(q, k, v, n_win: int, topk: int, num_heads: int, scale: Optional[float] = None):
    """Gather the routed regions' keys/values, then dense attention per region: O(HW * topk * region) memory."""
    B, H, W, _ = q.shape
    scale, idx = _route(q, k, n_win, topk, num_heads, scale)
    q_reg, k_reg, v_reg = (_regions(t, n_win) for t in (q, k, v))  # B, R, N, C
    R, N = q_reg.shape[1:3]
    batch = torch.arange(B, device=q.device).view(B, 1, 1)
    k_sel = k_reg[batch, idx].flatten(2, 3)  # B, R, topk * N, C
    v_sel = v_reg[batch, idx].flatten(2, 3)
    out = dense_attention(_heads(q_reg, num_heads), _heads(k_sel, num_heads), _heads(v_sel, num_heads), scale=scale)
    out = out.transpose(-3, -2).flatten(-2)  # B, R, N, heads * d_v
    return window_reverse(out, (H // n_win, W // n_win), H, W)


@routing_attention.register('reference', priority=0)
def _routing_reference(q, k, v, n_win: int, topk: int, num_heads: int, scale: Optional[float] = None):
    """The definition: full token-to-token attention with every key outside the routed regions masked out."""
    B, H, W, _ = q.shape
    scale, idx = _route(q, k, n_win, topk, num_heads, scale)
    R = n_win * n_win
    routed = torch.zeros(B, R, R, dtype=torch.bool, device=q.device).scatter_(-1, idx, True)  # query reg, key reg
    rows = torch.arange(H, device=q.device) // (H // n_win)
    cols = torch.arange(W, device=q.device) // (W // n_win)
    region = (rows[:, None] * n_win + cols[None, :]).flatten()  # HW: region of every token
    allowed = routed[:, region][:, :, region]  # B, HW, HW
    bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float('-inf'))
    out = dense_attention(_heads(q.flatten(1, 2), num_heads), _heads(k.flatten(1, 2), num_heads),
                          _heads(v.flatten(1, 2), num_heads), bias=bias.unsqueeze(1), scale=scale)
    return out.transpose(-3, -2).flatten(-2).view(B, H, W, -1)


class BiLevelRoutingAttention(nn.Module):
    """BiFormer's BRA block mixer on (B, H, W, C) maps: qkv projection, routing attention, LCE, output projection.

    Args:
        n_win: regions per side (S); the map is padded to a multiple of S.
        topk: routed regions per region.
        qk_dim: width of q and k (default dim); the attention scale is qk_dim ** -0.5 (the authors' choice).
        side_dwconv: kernel of the LCE depthwise conv on v (0 disables it).
    """

    def __init__(self, dim: int, num_heads: int = 8, n_win: int = 7, topk: int = 4, qk_dim: Optional[int] = None,
                 qk_scale: Optional[float] = None, side_dwconv: int = 5, qkv_bias: bool = True):
        super().__init__()
        self.dim = dim
        self.qk_dim = qk_dim or dim
        if self.qk_dim % num_heads or dim % num_heads:
            raise ValueError(f'qk_dim {self.qk_dim} and dim {dim} must be divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.n_win = n_win
        self.topk = topk
        self.scale = qk_scale or self.qk_dim ** -0.5
        self.qkv = nn.Linear(dim, 2 * self.qk_dim + dim, bias=qkv_bias)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim) if side_dwconv > 0 else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        S = self.n_win
        pad_h, pad_w = (-H) % S, (-W) % S
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        q, k, v = map_linear(self.qkv, x).split([self.qk_dim, self.qk_dim, self.dim], dim=-1)
        out = routing_attention(q, k, v, n_win=S, topk=min(self.topk, S * S), num_heads=self.num_heads,
                                scale=self.scale)
        if self.lepe is not None:
            out = out + self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        out = map_linear(self.proj, out)
        if pad_h or pad_w:
            out = out[:, :H, :W].contiguous()
        return out

    def extra_repr(self) -> str:
        return f'dim={self.dim}, num_heads={self.num_heads}, n_win={self.n_win}, topk={self.topk}'


class AttentionLePE(nn.Module):
    """Global multi-head attention on (B, H, W, C) maps plus a depthwise conv of the block input (BiFormer's last
    stage, `topk=-2` in the authors' code: note the LePE there convolves the normalized input, not v)."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, side_dwconv: int = 5):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim) if side_dwconv > 0 else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        q, k, v = map_linear(self.qkv, x).view(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = dense_attention(q, k, v).transpose(1, 2).reshape(B, H, W, C)
        if self.lepe is not None:
            out = out + self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return map_linear(self.proj, out)
