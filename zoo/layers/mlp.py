"""MLPs: timm's Mlp with a fused CPU inference path, and the variants timm.layers lacks."""
from __future__ import annotations

from typing import Optional, Type

import torch
import torch.nn as nn
from timm.layers import GELU
from timm.layers import Mlp as _TimmMlp

__all__ = ['Mlp', 'DWConvMlp', 'linear_act']


def _exact_gelu(act: nn.Module) -> bool:
    # erf GELU only: oneDNN's tanh GELU differs from torch's by ~5e-7 a call, which MaxViT-B compounds past
    # 1e-4 of timm's logits
    return type(act) is GELU or (type(act) is nn.GELU and act.approximate == 'none')


def _fusable(x: torch.Tensor, fc: nn.Module, act: nn.Module) -> bool:
    return (_exact_gelu(act) and type(fc) is nn.Linear and x.device.type == 'cpu'
            and x.dtype == torch.float32 and fc.weight.dtype == torch.float32
            and not torch.is_grad_enabled() and torch.backends.mkldnn.is_available()
            and not torch.jit.is_tracing() and not torch.jit.is_scripting() and not torch.compiler.is_compiling())


def linear_act(x: torch.Tensor, fc: nn.Module, act: nn.Module) -> torch.Tensor:
    """act(fc(x)). For CPU fp32 inference with a GELU, one oneDNN GEMM with the GELU in its epilogue (the
    kernel torch.compile's CPU backend emits): the GELU costs no extra pass over the hidden activations,
    and the result equals the two ops' to float32 rounding (oneDNN may block the GEMM differently). Anything else (training, GPU, bf16, tanh GELU, tracing
    or compiling) runs the two modules."""
    if _fusable(x, fc, act):
        return torch.ops.mkldnn._linear_pointwise(x, fc.weight, fc.bias, 'gelu', [], 'none')
    return act(fc(x))


class Mlp(_TimmMlp):
    """timm's Mlp (same arguments, modules and state dict), with fc1 + GELU fused for CPU inference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(linear_act(x, self.fc1, self.act))
        return self.drop2(self.fc2(self.norm(x)))


class DWConvMlp(nn.Module):
    """fc1 -> 3x3 depthwise conv -> act -> fc2 on (B, H, W, C) maps (the ConvFFN of PVTv2 / LITv2)."""

    def __init__(self, in_features: int, hidden_features: Optional[int] = None, out_features: Optional[int] = None,
                 act_layer: Type[nn.Module] = nn.GELU, drop: float = 0., kernel_size: int = 3):
        super().__init__()
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = nn.Conv2d(hidden_features, hidden_features, kernel_size, padding=kernel_size // 2,
                                groups=hidden_features)
        self.act = act_layer()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))
