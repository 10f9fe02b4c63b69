"""Gated positional self-attention (ConViT, d'Ascoli et al., ICML 2021).

Each head mixes content attention and a learned positional attention with a gate:

    attn = (1 - sigmoid(g_h)) * softmax(scale * q k^T) + sigmoid(g_h) * softmax(r_ij . w_h)

where r_ij = (dx, dy, dx^2 + dy^2) is the offset from query i to key j on the patch grid and w_h a per-head
projection (`pos_proj`); the result is renormalised over keys and applied to v. Any (H, W) grid works:
the offsets are computed for the grid at hand (cached by size), nothing is tied to a training resolution.

Backends of the op `gpsa`: 'reference' (the formula above, as the released code computes it) and 'dense'
(content attention through dense_attention; the positional weights, the same for every sample, computed once
per call with negligible ones flushed to 0; the final renormalisation is a no-op up to rounding and is
skipped).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn

from .dense import dense_attention
from .dispatch import AttentionOp
from .._cache import shape_cache
from ..mlp import map_linear

__all__ = ['gpsa', 'gpsa_offsets', 'GPSA']

gpsa = AttentionOp(
    'gpsa',
    """(1 - sigmoid(gate)) * softmax(scale * q @ k^T) @ v + sigmoid(gate) * softmax(pos_logits) @ v.

    q, k: (B, heads, N, d), v: (B, heads, N, dv); pos_logits: (heads, N, N) (or broadcastable to
    (B, heads, N, N)); gate: (heads,) raw gating parameters. Returns (B, heads, N, dv).""",
)


@gpsa.register('reference', priority=0)
def _gpsa_reference(q, k, v, pos_logits, gate, scale: Optional[float] = None):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    content = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
    g = torch.sigmoid(gate).view(-1, 1, 1)
    attn = (1. - g) * content + g * pos_logits.softmax(dim=-1)
    attn = attn / attn.sum(dim=-1, keepdim=True)
    return attn @ v


# Positional weights under e^-69 (1e-30) of their row's largest are set to 0: their share of any output is far
# below float32 rounding, but ConViT's locality init puts e^-87 .. e^-103 on far keys, subnormal floats that make
# the softmax and every multiply meeting them 10-100x slower on x86. Clamping the logits first keeps the softmax's
# own exps normal; the kept weights are the exact softmax up to a relative 1e-28.
_LOG_NEGLIGIBLE = -69.


def _positional_weights(pos_logits, g):
    """g * softmax(pos_logits), the weights under e^-69 of their row's largest exactly 0."""
    # dense first: ConViT's logits are a (N, N, heads) projection's permuted view, and every op here and in its
    # backward (a softmax along the stride-heads dim among them) read it at a stride
    pos_logits = pos_logits.contiguous()
    shifted = pos_logits - pos_logits.detach().amax(dim=-1, keepdim=True)  # softmax ignores the shift
    weights = shifted.clamp_min(_LOG_NEGLIGIBLE).softmax(dim=-1) * g
    return torch.where(shifted > _LOG_NEGLIGIBLE, weights, 0.)


def _positional_attention(pos_logits, g, v):
    """g * softmax(pos_logits) @ v. The weights depend on no sample: for (heads, N, N) logits they are computed
    once per call and applied to every sample's values in one GEMM per head (the batch folded into its columns)."""
    weights = _positional_weights(pos_logits, g)
    if weights.dim() != 3:
        return weights @ v
    B, H, N, dv = v.shape
    columns = v.permute(1, 2, 0, 3).reshape(H, N, B * dv)
    return torch.bmm(weights, columns).view(H, N, B, dv).permute(2, 0, 1, 3)


@gpsa.register('dense', priority=10)
def _gpsa_dense(q, k, v, pos_logits, gate, scale: Optional[float] = None):
    g = torch.sigmoid(gate).view(-1, 1, 1).to(v.dtype)
    content = dense_attention(q, k, v, scale=scale)
    return torch.addcmul(_positional_attention(pos_logits.to(v.dtype), g, v), content, 1. - g)


@shape_cache(maxsize=16)
def _offsets(H: int, W: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                                indexing='ij')
    rows, cols = rows.flatten(), cols.flatten()
    dx = cols[None, :] - cols[:, None]  # key minus query
    dy = rows[None, :] - rows[:, None]
    return torch.stack([dx, dy, dx ** 2 + dy ** 2], dim=-1)  # N, N, 3


def gpsa_offsets(H: int, W: int, device=None, dtype=None) -> torch.Tensor:
    """(N, N, 3) offsets (dx, dy, dx^2 + dy^2) from each query to each key of an H x W grid, N = H * W."""
    return _offsets(H, W).to(device=device, dtype=dtype)


class GPSA(nn.Module):
    """Gated positional self-attention on (B, H, W, C) maps or (B, H * W, C) patch tokens with their grid.
    Keys: qk, v, proj, pos_proj, gating_param."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, proj_drop: float = 0.,
                 locality_strength: float = 1., **_):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.locality_strength = locality_strength
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.pos_proj = nn.Linear(3, num_heads)
        self.gating_param = nn.Parameter(torch.ones(num_heads))

    @torch.no_grad()
    def local_init(self) -> None:
        """ConViT's locality init: v = identity, each head's positional attention peaks at one offset of a
        sqrt(heads) x sqrt(heads) neighbourhood (a soft convolution)."""
        self.v.weight.copy_(torch.eye(self.v.weight.shape[0]))
        kernel = int(self.num_heads ** .5)
        center = (kernel - 1) / 2 if kernel % 2 == 0 else kernel // 2
        for h1 in range(kernel):
            for h2 in range(kernel):
                head = h1 + kernel * h2
                self.pos_proj.weight[head] = torch.tensor([2. * (h2 - center), 2. * (h1 - center), -1.])
        self.pos_proj.weight.mul_(self.locality_strength)

    def forward(self, x: torch.Tensor, feat_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """x: (B, H, W, C) maps, or (B, H * W, C) patch tokens of the grid feat_size = (H, W) (no prefix tokens,
        the DeiT host's signature); returns the same layout."""
        shape = x.shape
        if x.ndim == 4:
            B, H, W, C = shape
        else:
            (B, _, C), (H, W) = shape, feat_size
        N = H * W
        q, k = map_linear(self.qk, x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        v = map_linear(self.v, x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        pos_logits = self.pos_proj(gpsa_offsets(H, W, device=x.device, dtype=self.pos_proj.weight.dtype))
        x = gpsa(q, k, v, pos_logits.permute(2, 0, 1), self.gating_param)  # heads, N, N
        return self.proj_drop(map_linear(self.proj, x.transpose(1, 2).reshape(shape)))
