"""Dense (full) multi-head scaled dot-product attention: the op every other mixer reduces to."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dispatch import AttentionOp
from .. import _native
from .._cache import capturing_graph

__all__ = ['dense_attention', 'Attention']

dense_attention = AttentionOp(
    'dense',
    """softmax(q @ k^T * scale + bias) @ v.

    q: (..., heads, Lq, d), k/v: (..., heads, Lk, d); bias: additive float tensor broadcastable to
    (..., heads, Lq, Lk) (relative position bias, -100/-inf masks). Returns (..., heads, Lq, d).""",
)


@dense_attention.register('reference', priority=0)
def _dense_reference(q, k, v, bias: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                     dropout_p: float = 0.):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    attn = (q * scale) @ k.transpose(-2, -1)
    if bias is not None:
        attn = attn + bias
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


def _fold_to_4d(q, k, v, bias):
    """Fold leading dims so SDPA sees 4-D (batch, group, L, d) tensors: its fused CPU/GPU kernels take only
    4-D inputs (5-D falls back to the slow math path). Dims the bias varies over go into the group dim,
    so the bias is broadcast over the batch dim instead of being copied per sample."""
    lead = q.shape[:-2]
    if bias is None or all(s == 1 for s in bias.shape[:-3]):
        shape = (-1, q.shape[-3] if q.dim() >= 3 else 1)
    else:
        blead = bias.shape[:-2]
        while len(blead) and blead[0] == 1:
            blead = blead[1:]
        grouped = lead[len(lead) - len(blead):]
        bias = bias.expand(*grouped, *bias.shape[-2:]).reshape(1, -1, *bias.shape[-2:])
        shape = (-1, bias.shape[1])
    q, k, v = (t.reshape(*shape, *t.shape[-2:]) for t in (q, k, v))
    return q, k, v, bias, lead


@dense_attention.register('sdpa', priority=10)
def _dense_sdpa(q, k, v, bias: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                dropout_p: float = 0.):
    if bias is not None and bias.dtype != q.dtype:
        bias = bias.to(q.dtype)  # under autocast q is low precision, a float32 bias table is not
    if bias is not None and bias.dim() < 4:
        bias = bias.view((1,) * (4 - bias.dim()) + bias.shape)  # the fused CPU kernel wants a 4-D mask
    if q.dim() != 4:
        q, k, v, bias, lead = _fold_to_4d(q, k, v, bias)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)
        return out.reshape(*lead, *out.shape[-2:])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)


# Self-attention within short sequences (7x7 windows and grids) on CPU: batched GEMMs
# beat SDPA's fused kernel, whose 32 x 512 query/key blocks fit them badly (float32, 2 threads: 1.55x at 49
# tokens, 1.3x at 100, 1.13x at 144, 0.87x at 196). Other shapes measured slower with bmm: HiLo's 2x2
# windows, BiFormer's gathered keys.
_BMM_TOKENS = (32, 144)


def _short_cpu_self_attention(q, k, v, bias=None, scale=None, dropout_p=0.) -> bool:
    return (q.device.type == 'cpu' and q.dtype == torch.float32 and q.shape[-2] == k.shape[-2]
            and _BMM_TOKENS[0] <= k.shape[-2] <= _BMM_TOKENS[1])


@dense_attention.register('bmm', priority=20, supports=_short_cpu_self_attention, runs=lambda *args, **kwargs: True)
def _dense_bmm(q, k, v, bias: Optional[torch.Tensor] = None, scale: Optional[float] = None,
               dropout_p: float = 0.):
    """The reference math as three batched GEMM-shaped calls: the bias add and scale fused into baddbmm."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    lead, (Lq, d), Lk, dv = q.shape[:-2], q.shape[-2:], k.shape[-2], v.shape[-1]
    q, k, v = q.reshape(-1, Lq, d), k.reshape(-1, Lk, d), v.reshape(-1, Lk, dv)
    if bias is None:
        attn = torch.baddbmm(q.new_zeros(()), q, k.transpose(1, 2), beta=0., alpha=scale)
    else:
        bias = bias.to(q.dtype).expand(*lead, Lq, Lk).reshape(-1, Lq, Lk)
        attn = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale)
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.:
        attn = F.dropout(attn, p=dropout_p)
    return torch.bmm(attn, v).view(*lead, Lq, dv)


def _flat_stride(sizes, strides) -> Optional[int]:
    """The single stride that walks `sizes` flattened row-major (0 when all are 1), or None if they do not
    flatten into one dim without a copy."""
    dims = [(n, st) for n, st in zip(sizes, strides) if n > 1]
    if any(outer != inner * n for (_, outer), (n, inner) in zip(dims, dims[1:])):
        return None
    return dims[-1][1] if dims else 0


def _native_shapes(q, k, v, bias=None, scale=None, dropout_p=0.) -> bool:
    """Calls the native kernel takes: CPU float32 inference (nothing needs a gradient), no dropout, at most
    256 keys, q/k dim <= 64, value dim a multiple of 8 up to 64, unbroadcast q/k/v with contiguous rows whose
    leading dims (before heads) flatten; not while a graph is captured (the kernel is opaque to tracing)."""
    tensors = (q, k, v) if bias is None else (q, k, v, bias)
    return (not capturing_graph() and q.device.type == 'cpu' and q.dtype == k.dtype == v.dtype == torch.float32
            and dropout_p == 0.
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
            and q.dim() >= 3 and q.shape[:-2] == k.shape[:-2] == v.shape[:-2] and k.shape[-2] == v.shape[-2]
            and k.shape[-2] <= 256 and q.shape[-1] == k.shape[-1] <= 64 and v.shape[-1] in range(8, 65, 8)
            and all(t.stride(-1) == 1 and _flat_stride(t.shape[:-3], t.stride()[:-3]) is not None
                    for t in (q, k, v)))


def _native_bias(bias: torch.Tensor, shape) -> Tuple[torch.Tensor, int, int]:
    """bias broadcast to `shape` (*lead, heads, Lq, Lk) as (tensor, period, group stride): group g of the
    flattened lead dims reads bias group g % period. Lead dims the bias is broadcast over come first
    (a window mask repeats over the batch); any other broadcast is materialised."""
    bias = bias.to(torch.float32).expand(shape)
    if bias.stride(-1) != 1:
        bias = bias.contiguous()
    sizes, strides = bias.shape[:-3], bias.stride()[:-3]
    first = next((i for i, (n, st) in enumerate(zip(sizes, strides)) if n > 1 and st != 0), len(sizes))
    stride = _flat_stride(sizes[first:], strides[first:])
    if stride is None or any(st == 0 and n > 1 for n, st in zip(sizes[first:], strides[first:])):
        bias = bias.contiguous()
        first, stride = 0, _flat_stride(bias.shape[:-3], bias.stride()[:-3])
    period = 1
    for n in sizes[first:]:
        period *= n
    return bias, period, stride


def native_is_fast(queries: int, keys: int) -> bool:
    """Where the native kernel beats SDPA and batched GEMMs (float32, 2 threads): from 2x2 windows (6x) through
    7x7 windows (1.3-2x incl. the output transpose it saves) to 196 keys; not for a handful of queries over many
    keys (the per-head key transpose dominates) nor 256 keys of dim 64 (SDPA 1.2x)."""
    return queries >= 4 and keys <= 196


def _native_fast(q, k, v, *args, **kwargs) -> bool:
    return (_native_shapes(q, k, v, *args, **kwargs) and native_is_fast(q.shape[-2], k.shape[-2])
            and _native.library() is not None)


@dense_attention.register('native', priority=30, supports=_native_fast,
                          runs=lambda *a, **kw: _native_shapes(*a, **kw) and _native.library() is not None)
def _dense_native(q, k, v, bias: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                  dropout_p: float = 0.):
    """zoo/csrc/cpu_attention.cpp: scores, softmax and the value sum per (group, head) in one pass, reading
    q/k/v through their strides. The result is a (..., heads, Lq, dv) view of a token-major (..., Lq, heads, dv)
    buffer, so `x.transpose(-3, -2).reshape(..., Lq, heads * dv)` afterwards is free."""
    lead, (H, Lq, d), Lk, dv = q.shape[:-3], q.shape[-3:], k.shape[-2], v.shape[-1]
    G = 1
    for n in lead:
        G *= n
    scale = d ** -0.5 if scale is None else scale
    strides = [_native.int64_array([_flat_stride(t.shape[:-3], t.stride()[:-3]), *t.stride()[-3:-1]])
               for t in (q, k, v)]
    if bias is not None:
        bias, period, group_stride = _native_bias(bias, (*lead, H, Lq, Lk))
        bias_strides = _native.int64_array([group_stride, *bias.stride()[-3:-1]])
    out = q.new_empty(*lead, Lq, H, dv)
    status = _native.library().zoo_short_attention_f32(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), G, H, Lq, Lk, d, dv, *strides,
        None if bias is None else bias.data_ptr(), 1 if bias is None else period,
        None if bias is None else bias_strides, out.data_ptr(), scale, torch.get_num_threads())
    if status:
        raise RuntimeError(f'zoo native attention: unsupported shapes q={tuple(q.shape)} v={tuple(v.shape)}')
    return out.transpose(-3, -2)


class Attention(nn.Module):
    """Multi-head self-attention over tokens (B, N, C) with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, head_dim: Optional[int] = None,
                 attn_drop: float = 0., proj_drop: float = 0.):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        attn_dim = self.head_dim * num_heads
        self.qkv = nn.Linear(dim, attn_dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(attn_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        x = dense_attention(q, k, v, bias=bias, dropout_p=self.attn_drop if self.training else 0.)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, -1)))
