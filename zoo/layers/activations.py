"""Activations whose eager inference runs a native kernel where PyTorch's CPU one is slow, and `get_act_layer`,
timm's resolver with those swapped in.

GELU's tanh form (MaxViT, CoAtNet) goes through Sleef's tanh in PyTorch's CPU kernel: 3.3 ms for a (2, 256,
56, 56) map on 2 threads, a fifth of MaxViT-T's time at batch 8. zoo_gelu_tanh_f32 (zoo/csrc/activations.cpp)
computes the same function as x * sigmoid(2u) with one exp; in eager training its derivative too
(zoo_gelu_tanh_backward_f32, the same exp), through an autograd Function that saves only x, as PyTorch's op does.
Graph capture (dynamo, export, tracing, FLOP counting), functorch transforms, double backward and anything but
dense CPU float32 run PyTorch's op."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import get_act_layer as _timm_get_act_layer
from timm.layers.activations import GELUTanh as _TimmGELUTanh

from . import _native
from ._cache import capturing_graph, eager_inference

__all__ = ['GELUTanh', 'gelu_tanh', 'get_act_layer', 'apply_inplace']


def _dense_cpu_f32(x: torch.Tensor) -> bool:
    return (x.device.type == 'cpu' and x.dtype == torch.float32
            and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))
            and _native.library() is not None)


def _native_forward(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    _native.library().zoo_gelu_tanh_f32(x.data_ptr(), out.data_ptr(), x.numel(), torch.get_num_threads())
    return out


class _GELUTanhNative(torch.autograd.Function):
    """gelu_tanh with the native kernels both ways (eager CPU training)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _native_forward(x, torch.empty_like(x))  # same strides as x: one dense buffer in x's order

    @staticmethod
    def backward(ctx, dy):
        x, = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a differentiable derivative
            return torch.ops.aten.gelu_backward(dy, x, approximate='tanh')
        dy = dy if dy.stride() == x.stride() else torch.empty_like(x).copy_(dy)
        dx = torch.empty_like(x)
        _native.library().zoo_gelu_tanh_backward_f32(x.data_ptr(), dy.data_ptr(), dx.data_ptr(), x.numel(),
                                                     torch.get_num_threads())
        return dx


def _native_training_ok(x: torch.Tensor) -> bool:
    return (x.requires_grad and torch.is_grad_enabled() and _dense_cpu_f32(x) and not capturing_graph()
            and not torch._C._are_functorch_transforms_active())


def gelu_tanh(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """F.gelu(x, approximate='tanh'), into x itself if inplace (inference only; training never overwrites x)."""
    if eager_inference() and _dense_cpu_f32(x):
        return _native_forward(x, x if inplace else torch.empty_like(x))
    if _native_training_ok(x):
        return _GELUTanhNative.apply(x)
    return torch.ops.aten.gelu_(x, approximate='tanh') if inplace else F.gelu(x, approximate='tanh')


class GELUTanh(_TimmGELUTanh):
    """timm's GELUTanh through the native kernels (`gelu_tanh`: inference, and eager training both ways)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_tanh(x)


def get_act_layer(name: Union[str, type, None]) -> Optional[type]:
    """timm.layers.get_act_layer, with zoo's faster classes for the names zoo has one for."""
    if name in ('gelu_tanh', _TimmGELUTanh):
        return GELUTanh
    return _timm_get_act_layer(name)


def apply_inplace(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """act(x) for an x nothing else reads afterwards: GELU variants overwrite x instead of allocating."""
    if type(act) is nn.GELU:
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    if isinstance(act, _TimmGELUTanh):
        return gelu_tanh(x, inplace=True)
    return act(x)
