"""Strided conv downsampling (stems and between-stage downsamples) that works at any input size."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['ConvDownsample', 'pad_for_stride']


def pad_for_stride(x: torch.Tensor, kernel_size: int, stride: int, padding: int) -> torch.Tensor:
    """Zero-pad an NCHW map at the bottom/right, only as much as needed for a (kernel_size, stride, padding)
    conv to give ceil(H / stride) x ceil(W / stride) outputs. At sizes where the conv already does, x is
    returned as it is (so released weights see exactly the inputs they were trained on)."""
    extra = [max(0, (math.ceil(s / stride) - 1) * stride + kernel_size - 2 * padding - s) for s in x.shape[-2:]]
    return F.pad(x, (0, extra[1], 0, extra[0])) if any(extra) else x


class ConvDownsample(nn.Module):
    """Conv (kernel_size, stride, padding) -> optional norm, any H, W: output is ceil(H / stride) x ceil(W / stride).

    input_fmt / output_fmt: 'NCHW' or 'NHWC' layout of the input and of the output (the norm runs on the
    output layout, e.g. nn.LayerNorm for 'NHWC'). Keys: `proj` (conv), `norm`.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int = 0,
                 norm_layer: Optional[Callable[[int], nn.Module]] = None, input_fmt: str = 'NCHW',
                 output_fmt: str = 'NCHW', bias: bool = True):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.input_fmt, self.output_fmt = input_fmt, output_fmt
        self.proj = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, bias=bias)
        self.norm = norm_layer(out_chs) if norm_layer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_fmt == 'NHWC':
            x = x.permute(0, 3, 1, 2)
        x = self.proj(pad_for_stride(x, self.kernel_size, self.stride, self.padding))
        if self.output_fmt == 'NHWC':
            x = x.permute(0, 2, 3, 1)
        return self.norm(x)
