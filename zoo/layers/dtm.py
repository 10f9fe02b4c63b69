"""Deformable token merging (LITv2): a 2x2 stride-2 deformable conv with learned offsets, BatchNorm and GELU.

Maps are channels-last (B, H, W, C) in and out. The deformable conv is `torchvision.ops.deform_conv2d`; its
offsets come from a plain 2x2 stride-2 conv (zero-initialised, so training starts as a regular 2x2 merge) and
use torchvision's layout (per kernel point a (dy, dx) pair), which is the layout of the DCN extension the
authors built on. Odd sides are zero-padded at the bottom/right first, so the output is ceil(H/2) x ceil(W/2).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

__all__ = ['DeformableTokenMerging']


class DeformableTokenMerging(nn.Module):
    def __init__(self, dim: int, out_dim: int, kernel_size: int = 2):
        super().__init__()
        k = kernel_size
        self.kernel_size = k
        # deformable conv parameters (weight/bias) and its offset predictor, as DCN's DeformConv2dPack holds them
        self.weight = nn.Parameter(torch.empty(out_dim, dim, k, k))
        self.bias = nn.Parameter(torch.empty(out_dim))
        self.conv_offset = nn.Conv2d(dim, 2 * k * k, k, stride=k)
        self.norm = nn.BatchNorm2d(out_dim)
        self.act = nn.GELU()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.weight[0].numel())
        nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        x = x.permute(0, 3, 1, 2)
        pad_h, pad_w = (-x.shape[2]) % k, (-x.shape[3]) % k
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        offset = self.conv_offset(x)
        # torchvision's CPU kernel has no bf16/fp16 and no autocast rule: run it in float32 (as its CUDA
        # autocast rule does) and give the result back in the input's dtype
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        with torch.autocast(x.device.type, enabled=False):
            out = deform_conv2d(x.to(dtype), offset.to(dtype), self.weight.to(dtype), self.bias.to(dtype), stride=k)
        x = out.to(x.dtype)
        return self.act(self.norm(x)).permute(0, 2, 3, 1)
