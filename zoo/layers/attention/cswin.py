"""Cross-shaped window self-attention with LePE (CSWin Transformer, Dong et al., CVPR 2022).

The heads are split in two halves: the first half (channels [0, C/2)) attends within vertical stripes of
width sw (H x sw windows), the second half within horizontal stripes (sw x W), so every token sees the cross
of its row band and column band. CSWin's last stage attends globally (one branch over the whole map). LePE
(locally-enhanced positional encoding) adds a depthwise conv of V, applied inside each stripe (zero beyond its
borders), to the attention output.

Any H, W: each branch pads its map with zeros to a multiple of sw, split evenly before and after (the
authors' segmentation backbone does exactly this to the projected q, k, v; the padded keys are not masked),
and crops back. Maps are channels-last (B, H, W, C); the attention itself is zoo's dense op.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dense import dense_attention
from .window import window_partition, window_reverse
from ..mlp import map_linear

__all__ = ['stripe_attention', 'cswin_attention', 'CSWinAttention']

Size2 = Tuple[int, int]


def stripe_attention(qkv: torch.Tensor, num_heads: int, stripe: Size2, lepe_weight: torch.Tensor,
                     lepe_bias: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                     dropout_p: float = 0.) -> torch.Tensor:
    """Multi-head self-attention inside the stripes (windows of `stripe` = (sh, sw)) of a map, plus LePE.

    qkv: (B, H, W, 3, C), q, k, v of a map whose H and W are multiples of sh and sw. lepe_weight: (C, 1, k, k)
    depthwise kernel applied to V inside each stripe, lepe_bias: (C,). Heads split C into num_heads contiguous
    groups. Returns (B, H, W, C).
    """
    B, H, W, _, C = qkv.shape
    sh, sw = stripe
    windows = window_partition(qkv.reshape(B, H, W, 3 * C), stripe)  # B, nW, sh * sw, 3C
    nW, N = windows.shape[1:3]
    q, k, v = windows.view(B, nW, N, 3, num_heads, C // num_heads).permute(3, 0, 1, 4, 2, 5)  # B, nW, heads, N, d
    out = dense_attention(q, k, v, scale=scale, dropout_p=dropout_p)
    out = out.transpose(-3, -2).reshape(B, nW, N, C)
    v_stripes = windows[..., 2 * C:].reshape(B * nW, sh, sw, C).permute(0, 3, 1, 2)
    lepe = F.conv2d(v_stripes, lepe_weight.to(v_stripes.dtype), None if lepe_bias is None else
                    lepe_bias.to(v_stripes.dtype), padding=lepe_weight.shape[-1] // 2, groups=C)
    out = out + lepe.permute(0, 2, 3, 1).reshape(B, nW, N, C)
    return window_reverse(out, stripe, H, W)


def _centered_pad(n: int, multiple: int) -> Tuple[int, int]:
    pad = (-n) % multiple
    return pad // 2, pad - pad // 2


def cswin_attention(qkv: torch.Tensor, num_heads: int, split_size: Optional[int],
                    lepe_weights: Sequence[torch.Tensor], lepe_biases: Sequence[Optional[torch.Tensor]],
                    scale: Optional[float] = None, dropout_p: float = 0.) -> torch.Tensor:
    """Cross-shaped window attention with LePE. qkv: (B, H, W, 3, C) -> (B, H, W, C).

    split_size None: one branch of num_heads heads over the whole map (lepe_weights: one (C, 1, k, k) kernel).
    Otherwise two branches of num_heads / 2 heads each (lepe_weights: two (C/2, 1, k, k) kernels): channels
    [0, C/2) attend within H x split_size stripes, [C/2, C) within split_size x W stripes; each branch pads its
    map with zeros (evenly on both sides) to a multiple of split_size and crops back.
    """
    B, H, W, _, C = qkv.shape
    if split_size is None:
        return stripe_attention(qkv, num_heads, (H, W), lepe_weights[0], lepe_biases[0], scale, dropout_p)
    if C % 2 or num_heads % 2:
        raise ValueError(f'cross-shaped attention splits channels and heads in two: got C={C}, heads={num_heads}')
    half = C // 2
    outs = []
    for branch in range(2):
        part = qkv[..., branch * half:(branch + 1) * half]
        axis = 2 if branch == 0 else 1  # vertical stripes are padded in width, horizontal ones in height
        before, after = _centered_pad(part.shape[axis], split_size)
        if before or after:
            part = F.pad(part, (0, 0, 0, 0) + (0, 0) * (axis == 1) + (before, after))
        stripe = (part.shape[1], split_size) if axis == 2 else (split_size, part.shape[2])
        out = stripe_attention(part, num_heads // 2, stripe, lepe_weights[branch], lepe_biases[branch], scale,
                               dropout_p)
        outs.append(out.narrow(axis, before, qkv.shape[axis]))
    return torch.cat(outs, dim=-1)


class CSWinAttention(nn.Module):
    """CSWin's token mixer on (B, H, W, C) maps: qkv projection, cross-shaped (or global) stripe attention with
    LePE, output projection.

    split_size: stripe width sw; None = global attention (CSWin's last stage). window_size / shift_size are
    accepted for host compatibility (the Swin block signature) and ignored. Keys: qkv, lepe.{0,1} (one
    depthwise conv per branch: the authors' attns.{i}.get_v), proj.
    """

    def __init__(self, dim: int, num_heads: int, window_size: Size2 = (7, 7), shift_size: Size2 = (0, 0),
                 qkv_bias: bool = True, attn_drop: float = 0., proj_drop: float = 0.,
                 split_size: Optional[int] = 7, lepe_kernel: int = 3):
        super().__init__()
        branches = 1 if split_size is None else 2
        if dim % (num_heads * branches) or num_heads % branches:
            raise ValueError(f'dim {dim} and num_heads {num_heads} must split into {branches} equal branches')
        self.num_heads = num_heads
        self.split_size = split_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        width = dim // branches
        self.lepe = nn.ModuleList([
            nn.Conv2d(width, width, lepe_kernel, padding=lepe_kernel // 2, groups=width) for _ in range(branches)])
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def set_window_size(self, window_size: Size2, shift_size: Size2 = (0, 0)) -> None:
        pass  # nothing depends on the size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = map_linear(self.qkv, x).view(B, H, W, 3, C)
        out = cswin_attention(qkv, self.num_heads, self.split_size, [m.weight for m in self.lepe],
                              [m.bias for m in self.lepe], dropout_p=self.attn_drop if self.training else 0.)
        return self.proj_drop(map_linear(self.proj, out))

    def extra_repr(self) -> str:
        return f'num_heads={self.num_heads}, split_size={self.split_size}'
