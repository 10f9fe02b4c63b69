"""Conditional positional encoding (Chu et al., CPVT): x + depthwise kxk conv(x), used by DaViT before each
attention and MLP branch. Position comes from zero padding at the borders, so any H, W works."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ['ConvPosEnc']


class ConvPosEnc(nn.Module):
    """x + dwconv(x) on (B, H, W, C) maps (fmt='NHWC') or (B, C, H, W) maps (fmt='NCHW'). Keys: proj."""

    def __init__(self, dim: int, kernel_size: int = 3, act: bool = False, fmt: str = 'NHWC'):
        super().__init__()
        self.fmt = fmt
        self.proj = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fmt == 'NHWC':
            return x + self.act(self.proj(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        return x + self.act(self.proj(x))
