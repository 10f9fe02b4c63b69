"""Squeeze-and-excitation that keeps a channels-last map's gradient channels-last."""
from __future__ import annotations

import torch
from timm.layers import SEModule

__all__ = ['SqueezeExcite']


class SqueezeExcite(SEModule):
    """timm's SEModule (same arguments and keys) whose squeeze keeps a channels-last map's memory format in the
    gradient: the mean runs over that memory's own (H, W) dims. Over the NCHW view's dims its backward expanded the
    gradient NCHW, so the SE input's two gradients were summed across layouts and the BN-act and depthwise
    convolution backwards below ran on the mixed result (MaxViT's MBConv and SHViT's downsample, channels-last
    training)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.add_maxpool or not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():
            return super().forward(x)
        x_se = x.permute(0, 2, 3, 1).mean((1, 2), keepdim=True).permute(0, 3, 1, 2)
        x_se = self.fc2(self.act(self.bn(self.fc1(x_se))))
        return x * self.gate(x_se)
