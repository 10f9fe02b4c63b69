"""Conv-BatchNorm building blocks for the conv-heavy efficient families (SHViT, ...): conv-BN(-act) units,
a strided conv stem and a conv-BN MLP. Built on timm's ConvNormAct (keys `conv`, `bn`)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ConvNormAct

from ._cache import DerivedTensors, eager_inference
from .mlp import inference_linear

__all__ = ['conv_bn', 'ConvBn', 'ConvStem', 'ConvBnMlp', 'with_identity_tap', 'is_pointwise', 'pointwise_conv2d']


def is_pointwise(conv: nn.Conv2d) -> bool:
    """A 1x1, stride-1, ungrouped, unpadded conv: a per-pixel linear map over channels."""
    return (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1
            and conv.padding in ((0, 0), 'valid', 'same') and conv.dilation == (1, 1))


def pointwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """conv2d(x, weight, bias) for a pointwise (O, C, 1, 1) kernel. On a channels-last map it is one GEMM over the
    (B*H*W, C) pixel rows, returned channels-last: SHViT-S4 runs 1.12x faster (batch 8, 2 CPU threads) than with
    oneDNN's conv; the same sums, float32 rounding aside. Shape-dependent: PoolFormer's 1x1-conv MLP ran 0.93x
    this way, so it is used only where measured (ConvBn). Eager inference only: the GEMM is inference_linear's."""
    if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
        return F.conv2d(x, weight, bias)
    b, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(-1, c)
    out = inference_linear(rows, weight.reshape(weight.shape[0], c), bias)
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)


def with_identity_tap(weight: torch.Tensor) -> torch.Tensor:
    """A depthwise kxk kernel (C, 1, k, k), odd k, plus 1 at its centre tap: conv(x, w') = x + conv(x, w) for a
    stride-1 'same' depthwise conv, so a residual around one runs as a single conv (one pass less over x)."""
    c = weight.shape[-1] // 2
    weight = weight.clone()
    weight[:, 0, c, c] += 1
    return weight


class ConvBn(ConvNormAct):
    """timm's ConvNormAct whose inference forward (eval, no grad) is one conv with the BatchNorm folded in.

    residual=True makes it x + ConvBn(x) (a stride-1 depthwise conv-BN without act); at inference the identity is
    folded into the kernel's centre tap too. The folded weight and bias are cached and rebuilt when any conv/BN
    tensor changes (`DerivedTensors`), so the module stays a plain ConvNormAct to its state dict and to training;
    a captured graph (export, compile, FLOP counting) has the unfolded ops. Saves one pass over every BN output.
    """

    def __init__(self, *args, residual: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.residual = residual
        self._folded = DerivedTensors()
        if residual and not (self.conv.groups == self.conv.in_channels == self.conv.out_channels
                             and self.conv.stride == (1, 1) and isinstance(self.bn.act, nn.Identity)):
            raise ValueError('residual=True needs a stride-1 depthwise conv-BN without activation')

    def _fold(self) -> Tuple[torch.Tensor, torch.Tensor]:
        conv, bn = self.conv, self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        weight = conv.weight * scale.view(-1, 1, 1, 1)
        return with_identity_tap(weight) if self.residual else weight, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not eager_inference(self) or not isinstance(self.bn, nn.BatchNorm2d):
            return x + super().forward(x) if self.residual else super().forward(x)
        conv, bn = self.conv, self.bn
        weight, bias = self._folded.get(self._fold, conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean,
                                        bn.running_var)
        if is_pointwise(conv):
            x = pointwise_conv2d(x, weight, bias)
        else:
            x = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return self.bn.act(self.bn.drop(x))


def conv_bn(in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
            act_layer: Optional[Callable] = None, bn_weight_init: float = 1., residual: bool = False) -> ConvBn:
    """Conv (no bias, 'same'-style padding k // 2) -> BatchNorm [-> act]; bn_weight_init 0 makes a residual
    branch start as identity; residual=True returns x + conv-BN(x) (see ConvBn)."""
    m = ConvBn(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups,
               apply_act=act_layer is not None, act_layer=act_layer, residual=residual)
    nn.init.constant_(m.bn.weight, bn_weight_init)
    nn.init.zeros_(m.bn.bias)
    return m


class ConvStem(nn.Sequential):
    """num_layers x (3x3 stride-2 conv-BN), act between (not after the last): an overlapping patchify stem of
    stride 2 ** num_layers with widths out_chs / 2 ** (num_layers - 1 - i). Any H, W (output ceil(H / stride))."""

    def __init__(self, in_chs: int, out_chs: int, num_layers: int = 4, act_layer: Callable = nn.ReLU,
                 widths: Optional[Sequence[int]] = None):
        widths = widths or [out_chs // 2 ** (num_layers - 1 - i) for i in range(num_layers)]
        layers = []
        for i, w in enumerate(widths):
            layers.append(conv_bn(in_chs, w, 3, stride=2, act_layer=act_layer if i < num_layers - 1 else None))
            in_chs = w
        super().__init__(*layers)
        self.stride = 2 ** num_layers


class ConvBnMlp(nn.Module):
    """1x1 conv-BN -> act -> 1x1 conv-BN (BN weight of the last starts at 0) on NCHW maps. Keys pw1, pw2."""

    def __init__(self, dim: int, hidden: int, act_layer: Callable = nn.ReLU):
        super().__init__()
        self.pw1 = conv_bn(dim, hidden, act_layer=act_layer)
        self.pw2 = conv_bn(hidden, dim, bn_weight_init=0.)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.pw1(x))
