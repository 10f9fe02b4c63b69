"""InLine attention (Han et al., NeurIPS 2024): injective linear attention with a local residual.

Linear attention normalised by division is not injective (queries that differ by a scale get the same
output). InLine normalises by subtraction instead, so attention weights sum to one without a division:

    out_i = mean_j(v_j) + s / N * sum_j (q_i . k_j - q_i . mean(k)) v_j
          = mean(v) + s * (q_i (K^T V / N) - (q_i . mean(k)) mean(v))

with s = head_dim ** -0.5 and an optional kernel phi on q and k. The reductions (K^T V, means) run in fp32
under autocast. The local residual is a 3x3 depthwise conv on V whose per-channel kernel is predicted from
the mean token (two grouped 1x1 convs), applied to the (H, W) map passed in explicitly.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._cache import capturing_graph
from ..mlp import map_linear

__all__ = ['inline_attention', 'dynamic_depthwise_conv', 'InLineAttention']

Size2 = Tuple[int, int]


def inline_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    """Injective linear attention. q, k, v: (B, heads, N, d) -> (B, heads, N, d), computed in fp32 (float64 stays)."""
    dtype = q.dtype
    compute = torch.promote_types(dtype, torch.float32)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v = q.to(compute), k.to(compute), v.to(compute)
        kv = k.transpose(-2, -1) @ v / k.shape[-2]          # B, heads, d, d
        k_mean = k.mean(dim=-2, keepdim=True)               # B, heads, 1, d
        v_mean = v.mean(dim=-2, keepdim=True)               # B, heads, 1, d
        out = v_mean + scale * (q @ kv - (q @ k_mean.transpose(-2, -1)) * v_mean)
    return out.to(dtype)


def dynamic_depthwise_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Depthwise conv with a kernel per sample and channel. x: (B, C, H, W), weight: (B, C, k, k), 'same' padding.

    Eager: one conv with the batch folded into the groups (groups=B*C), 5.7x faster than the sum below for
    InLine-DeiT-T's 14x14x192 maps on 2 CPU threads. While a graph is captured (ONNX export, torch.jit.trace,
    torch.compile) it is a sum of k * k shifted, weighted copies of the padded map instead: a group count that
    depends on the batch cannot be exported with a dynamic batch (ONNX Conv's `group` is a constant attribute)
    and is baked in by torch.jit.trace. Same math; float sums in another order (differences ~1e-7)."""
    B, C, H, W = x.shape
    k = int(weight.shape[-1])  # a constant kernel size (torch.jit.trace would hand a tensor to divmod)
    weight = weight.to(x.dtype)
    if not capturing_graph():
        return F.conv2d(x.reshape(1, B * C, H, W), weight.reshape(B * C, 1, k, k), padding=k // 2,
                        groups=B * C).view(B, C, H, W)
    xp = F.pad(x, (k // 2, k // 2, k // 2, k // 2))
    out = xp[:, :, :H, :W] * weight[:, :, :1, :1]
    for t in range(1, k * k):
        i, j = divmod(t, k)
        out = out + xp[:, :, i:i + H, j:j + W] * weight[:, :, i:i + 1, j:j + 1]
    return out


_KERNELS = {'identity': None, 'relu': F.relu, 'leakyrelu': F.leaky_relu, 'exp': lambda x: (x * 0.2).exp()}


class InLineAttention(nn.Module):
    """Global InLine attention on (B, H, W, C) maps.

    window_size / shift_size are accepted for host compatibility (Swin) and ignored: the mixer is global and
    has no position-dependent parameters.

    InLine-CSWin's form: `lepe_kernel` > 0 adds CSWin's LePE (a depthwise conv of V, key `lepe`) to the output,
    and `kernel_from_block_input` predicts the residual kernel from the mean of the block's input before its
    norm (the host passes it as `block_input`) instead of the mean of the mixer's input.
    """

    def __init__(self, dim: int, num_heads: int, window_size: Size2 = (7, 7), shift_size: Size2 = (0, 0),
                 qkv_bias: bool = True, attn_drop: float = 0., proj_drop: float = 0., kernel_func: str = 'identity',
                 residual_kernel: int = 3, num_prefix_tokens: int = 0, lepe_kernel: int = 0,
                 kernel_from_block_input: bool = False):
        super().__init__()
        if kernel_func not in _KERNELS:
            raise ValueError(f'kernel_func must be one of {list(_KERNELS)}, got {kernel_func!r}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.kernel_func = kernel_func
        self.residual_kernel = residual_kernel
        self.num_prefix_tokens = num_prefix_tokens
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.residual = nn.Sequential(
            nn.Conv1d(dim, dim, kernel_size=1, groups=num_heads),
            nn.GELU(),
            nn.Conv1d(dim, dim * residual_kernel ** 2, kernel_size=1, groups=num_heads),
        )
        self.lepe = nn.Conv2d(dim, dim, lepe_kernel, padding=lepe_kernel // 2, groups=dim) if lepe_kernel else None
        self.reads_block_input = kernel_from_block_input
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def set_window_size(self, window_size: Size2, shift_size: Size2 = (0, 0)) -> None:
        pass  # nothing depends on the size

    def forward(self, x: torch.Tensor, feat_size: Optional[Size2] = None,
                block_input: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: a (B, H, W, C) map, or (B, P + H * W, C) tokens (P prefix tokens first) with feat_size=(H, W).
        Prefix tokens take part in the attention and the mean token; the local residual acts on the map.
        block_input: x's shape; its mean predicts the residual kernel when `kernel_from_block_input`."""
        if x.ndim == 4:
            B, H, W, C = x.shape
            if block_input is not None:
                block_input = block_input.reshape(B, H * W, C)
            return self.mix_tokens(x.reshape(B, H * W, C), (H, W), block_input).reshape(B, H, W, C)
        return self.mix_tokens(x, feat_size, block_input)

    def mix_tokens(self, x: torch.Tensor, feat_size: Size2, block_input: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, L, C = x.shape
        H, W = feat_size
        P = self.num_prefix_tokens
        q, k, v = map_linear(self.qkv, x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        phi = _KERNELS[self.kernel_func]
        out = inline_attention(phi(q) if phi else q, phi(k) if phi else k, v)
        out = out.transpose(1, 2).reshape(B, L, C)
        r = self.residual_kernel
        if self.reads_block_input and block_input is None:
            raise ValueError('this InLineAttention predicts its residual kernel from the block input: pass block_input')
        source = block_input if self.reads_block_input else x
        kernel = self.residual(source.mean(dim=1).unsqueeze(-1)).view(B, C, r, r)
        v_map = v[:, :, P:].transpose(-2, -1).reshape(B, C, H, W)
        local = dynamic_depthwise_conv(v_map, kernel)
        if self.lepe is not None:
            local = local + self.lepe(v_map)
        local = local.flatten(2).transpose(1, 2).to(out.dtype)
        out = torch.cat([out[:, :P], out[:, P:] + local], dim=1) if P else out + local
        return self.proj_drop(map_linear(self.proj, out))

    def extra_repr(self) -> str:
        return f'num_heads={self.num_heads}, kernel_func={self.kernel_func!r}'
