"""Fused CPU inference kernels: the oneDNN primitives torch.compile's CPU backend emits, called eagerly."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from timm.layers import GELU

__all__ = ['linear_act', 'conv_act']


def _exact_gelu(act: nn.Module) -> bool:
    # erf GELU only: oneDNN's tanh GELU differs from torch's by ~5e-7 a call, which MaxViT-B compounds past
    # 1e-4 of timm's logits
    return type(act) is GELU or (type(act) is nn.GELU and act.approximate == 'none')


def _onednn_inference(x: torch.Tensor, weight: torch.Tensor) -> bool:
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False  # first: compilers and tracers see the plain ops (and dynamo cannot trace the checks below)
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not torch.is_grad_enabled() and torch.backends.mkldnn.is_available())


def linear_act(x: torch.Tensor, fc: nn.Module, act: Optional[nn.Module] = None) -> torch.Tensor:
    """act(fc(x)) (fc(x) when act is None).

    For CPU fp32 inference, one oneDNN GEMM with the GELU in its epilogue (the kernel torch.compile's CPU
    backend emits): the GELU costs no extra pass over the activations, and oneDNN's GEMM is faster than
    addmm on narrow or odd widths (qkv 96 -> 288: 1.8x, FocalNet's 96 -> 195: 2x, 2 threads). Results equal
    the unfused ops' to float32 rounding. Anything else (training, GPU, bf16, tanh GELU, tracing or
    compiling) runs the modules."""
    fusable = act is None or _exact_gelu(act)
    if fusable and type(fc) is nn.Linear and _onednn_inference(x, fc.weight):
        return torch.ops.mkldnn._linear_pointwise(x, fc.weight, fc.bias, 'none' if act is None else 'gelu', [],
                                                  '' if act is None else 'none')
    x = fc(x)
    return x if act is None else act(x)


def conv_act(x: torch.Tensor, conv: nn.Module, act: nn.Module) -> torch.Tensor:
    """act(conv(x)); for CPU fp32 inference on channels-last maps with an erf GELU, one oneDNN convolution
    with the GELU in its epilogue (FocalNet's depthwise context convs: ~1.5x)."""
    if (_exact_gelu(act) and type(conv) is nn.Conv2d and conv.padding_mode == 'zeros'
            and not isinstance(conv.padding, str) and x.is_contiguous(memory_format=torch.channels_last)
            and _onednn_inference(x, conv.weight)):
        return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, conv.padding, conv.stride,
                                                       conv.dilation, conv.groups, 'gelu', [], 'none')
    return act(conv(x))
