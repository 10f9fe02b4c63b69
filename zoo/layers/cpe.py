"""Conditional positional encoding (Chu et al., CPVT): x + depthwise kxk conv(x), used by DaViT before each
attention and MLP branch. Position comes from zero padding at the borders, so any H, W works."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._cache import DerivedTensors, eager_inference
from .conv import with_identity_tap

__all__ = ['ConvPosEnc']


class ConvPosEnc(nn.Module):
    """x + dwconv(x) on (B, H, W, C) maps (fmt='NHWC') or (B, C, H, W) maps (fmt='NCHW'). Keys: proj."""

    def __init__(self, dim: int, kernel_size: int = 3, act: bool = False, fmt: str = 'NHWC'):
        super().__init__()
        self.fmt = fmt
        self.proj = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.act = nn.GELU() if act else nn.Identity()
        self._with_identity = DerivedTensors()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nchw = x.permute(0, 3, 1, 2) if self.fmt == 'NHWC' else x
        if eager_inference(self) and isinstance(self.act, nn.Identity):  # x + conv(x) as one conv
            weight = self._with_identity.get(lambda: with_identity_tap(self.proj.weight), self.proj.weight)
            y = F.conv2d(nchw, weight, self.proj.bias, padding=self.proj.padding, groups=self.proj.groups)
        else:
            y = nchw + self.act(self.proj(nchw))
        return y.permute(0, 2, 3, 1) if self.fmt == 'NHWC' else y
