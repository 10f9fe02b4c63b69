"""PoolFormer's token mixer (Yu et al., CVPR 2022): average pooling minus identity."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['pool_mix', 'PoolMixer']


def pool_mix(x: torch.Tensor, pool_size: int = 3) -> torch.Tensor:
    """avg_pool(x) - x on (B, C, H, W) maps, any H, W.

    Stride 1, 'same' padding that is left out of the average (count_include_pad=False), so border tokens
    average their real neighbours only. Subtracting x makes the block's residual add the pooled map."""
    return F.avg_pool2d(x, pool_size, stride=1, padding=pool_size // 2, count_include_pad=False) - x


class PoolMixer(nn.Module):
    """Parameter-free module around `pool_mix` (NCHW in and out)."""

    def __init__(self, dim: int = 0, pool_size: int = 3, **kwargs):
        super().__init__()
        self.pool_size = pool_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_mix(x, self.pool_size)

    def extra_repr(self) -> str:
        return f'pool_size={self.pool_size}'
