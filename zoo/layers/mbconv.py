"""MBConv (inverted bottleneck with squeeze-excite, Sandler et al. / Tan & Le) and the conv stem of the
hybrid conv-attention families (MaxViT), built from timm.layers (create_conv2d, BatchNormAct2d) and zoo's
SqueezeExcite (timm's SEModule, keeping channels-last gradients).

NCHW maps. With padding='same' (TF-style, as the released MaxViT weights), strided convs and pools pad
dynamically, so any H, W works and a stride-2 unit gives ceil(H / 2) x ceil(W / 2).
Keys follow timm's MaxViT: pre_norm, conv1_1x1, norm1, conv2_kxk, norm2, se.fc1/fc2, conv3_1x1, shortcut.expand;
stem: conv1, norm1, conv2.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Union

import torch
import torch.nn as nn
from timm.layers import DropPath, create_conv2d, create_pool2d, get_norm_act_layer, make_divisible

from .activations import get_act_layer
from .squeeze_excite import SqueezeExcite

__all__ = ['MBConv', 'MBConvStem']


def _bn_act(act_layer: Union[str, type], eps: float):
    return partial(get_norm_act_layer('batchnorm2d', get_act_layer(act_layer)), eps=eps)


class MBConv(nn.Module):
    """Pre-norm MBConv: BN -> 1x1 expand -> BN-act -> kxk depthwise (stride) -> BN-act -> SE -> 1x1 project,
    plus the shortcut (2x2 average pool + 1x1 conv when the block downsamples or changes width).

    mid channels = make_divisible(out_chs * expand_ratio); SE reduces to int(se_ratio * out_chs)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expand_ratio: float = 4., kernel_size: int = 3,
                 se_ratio: float = 0.25, act_layer: Union[str, type] = 'gelu_tanh', se_act_layer: str = 'silu',
                 norm_eps: float = 1e-3, padding: str = 'same', drop_path: float = 0.):
        super().__init__()
        norm_act = _bn_act(act_layer, norm_eps)
        mid_chs = make_divisible(out_chs * expand_ratio)
        if stride == 2 or in_chs != out_chs:
            self.shortcut = nn.Sequential(OrderedDict(
                pool=create_pool2d('avg', 2, padding=padding) if stride == 2 else nn.Identity(),
                expand=nn.Conv2d(in_chs, out_chs, 1) if in_chs != out_chs else nn.Identity(),
            ))
        else:
            self.shortcut = nn.Identity()
        self.pre_norm = norm_act(in_chs, apply_act=False)
        self.conv1_1x1 = create_conv2d(in_chs, mid_chs, 1)
        self.norm1 = norm_act(mid_chs)
        self.conv2_kxk = create_conv2d(mid_chs, mid_chs, kernel_size, stride=stride, groups=mid_chs, padding=padding)
        self.norm2 = norm_act(mid_chs)
        self.se = SqueezeExcite(mid_chs, rd_channels=int(se_ratio * out_chs), act_layer=se_act_layer)
        self.conv3_1x1 = create_conv2d(mid_chs, out_chs, 1, bias=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.norm1(self.conv1_1x1(self.pre_norm(x)))
        x = self.se(self.norm2(self.conv2_kxk(x)))
        return self.drop_path(self.conv3_1x1(x)) + shortcut


class MBConvStem(nn.Module):
    """kxk stride-2 conv -> BN-act -> kxk conv: the stride-2 stem of MaxViT / CoAtNet (any H, W -> ceil(H / 2))."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int = 0, kernel_size: int = 3, bias: bool = True,
                 act_layer: Union[str, type] = 'gelu_tanh', norm_eps: float = 1e-3, padding: str = 'same'):
        super().__init__()
        mid_chs = mid_chs or out_chs
        self.conv1 = create_conv2d(in_chs, mid_chs, kernel_size, stride=2, padding=padding, bias=bias)
        self.norm1 = _bn_act(act_layer, norm_eps)(mid_chs)
        self.conv2 = create_conv2d(mid_chs, out_chs, kernel_size, stride=1, padding=padding, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(x)))
