"""Conv-BatchNorm building blocks for the conv-heavy efficient families (SHViT, ...): conv-BN(-act) units,
a strided conv stem and a conv-BN MLP. Built on timm's ConvNormAct (keys `conv`, `bn`)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ConvNormAct

from ._cache import capturing_graph

__all__ = ['conv_bn', 'ConvBn', 'ConvStem', 'ConvBnMlp']


class ConvBn(ConvNormAct):
    """timm's ConvNormAct whose inference forward (eval, no grad) is one conv with the BatchNorm folded in.

    The folded weight and bias are cached and rebuilt when any conv/BN tensor is replaced or changed in place
    (load_state_dict, an optimizer step, .to()), so the module stays a plain ConvNormAct to its state dict and
    to training; a captured graph (export, compile, FLOP counting) has the unfolded ops. Saves one pass over
    every BN output.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._folded: Optional[Tuple[tuple, torch.Tensor, torch.Tensor]] = None

    def _fold(self) -> Tuple[torch.Tensor, torch.Tensor]:
        conv, bn = self.conv, self.bn
        tensors = (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        key = tuple((t.data_ptr(), t._version) if t is not None else None for t in tensors)
        if self._folded is None or self._folded[0] != key:
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                shift = shift + conv.bias * scale
            self._folded = (key, conv.weight * scale.view(-1, 1, 1, 1), shift)
        return self._folded[1], self._folded[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() or capturing_graph() or not isinstance(self.bn, nn.BatchNorm2d):
            return super().forward(x)
        weight, bias = self._fold()
        conv = self.conv
        x = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return self.bn.act(self.bn.drop(x))


def conv_bn(in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
            act_layer: Optional[Callable] = None, bn_weight_init: float = 1.) -> ConvBn:
    """Conv (no bias, 'same'-style padding k // 2) -> BatchNorm [-> act]; bn_weight_init 0 makes a residual
    branch start as identity."""
    m = ConvBn(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups,
               apply_act=act_layer is not None, act_layer=act_layer)
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
