"""Dense (full) multi-head scaled dot-product attention: the op every other mixer reduces to."""
from __future__ import annotations

import functools
import statistics
import time
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dispatch import AttentionOp
from .. import _native
from .._cache import capturing_graph
from ..mlp import map_linear

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


# Which of SDPA, batched GEMMs and the native kernel is fastest for CPU float32 self-attention depends on the CPU:
# on a Zen 3 (AVX2) the GEMMs beat SDPA's fused kernel, whose 32 x 512 query/key blocks fit short sequences badly
# (1.55x at 49 tokens, 1.13x at 144, 0.87x at 196), while on an AVX-512 + AMX Xeon SDPA beats them 1.5-3x and the
# native (AVX2) kernel at 144 keys and more. So it is measured: once per machine, cached on disk
# (_native.measured), at each of these key counts, for inference and for a training step; a call takes the bucket
# of the smallest count >= its keys. Longer sequences take SDPA.
_CALIBRATED_KEYS = (16, 49, 100, 144, 196, 256)
_STATIC_BMM_TOKENS = (32, 144)  # the Zen 3 rule for traced graphs (export, TorchScript): nothing is measured there


def _median_thread_time(fn, repeats: int = 5) -> float:
    """Median CPU time of this thread over `repeats` calls after one warm-up: run on 1 thread, a busy machine's
    descheduling does not count."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times)


def _time_backends_at(keys: int, gen: torch.Generator) -> Tuple[Dict[str, float], Dict[str, float]]:
    """(inference, training) seconds per call of each CPU backend at `keys` keys: about 800 tokens of 4 heads of
    dim 32 with a per-head bias (a 7x7-window batch at 49), the output reshaped to tokens as every layer does."""
    groups, heads, dim = max(1, 800 // keys), 4, 32
    q, k, v = torch.randn(3, groups, heads, keys, dim, generator=gen).unbind(0)
    bias = torch.randn(heads, keys, keys, generator=gen)

    def forward(name, q=q, k=k, v=v):
        return dense_attention.backends[name].fn(q, k, v, bias=bias).transpose(1, 2).reshape(groups, keys, -1)

    def step(name):
        forward(name, *(t.detach().requires_grad_() for t in (q, k, v))).sum().backward()

    with torch.no_grad():
        names = ['sdpa', 'bmm'] + (['native'] if _native.library() is not None else [])
        inference = {n: _median_thread_time(lambda n=n: forward(n)) for n in names}
    training = {n: _median_thread_time(lambda n=n: step(n), 3) for n in ('sdpa', 'bmm')}
    return inference, training


def _measure_dense_backends() -> Dict[str, Dict[str, Dict[str, float]]]:
    """{'inference' | 'training': {keys: {backend: seconds}}} at each calibrated key count, on 1 thread (about 3 s).
    The first dense call may come from inside the caller's inference_mode / no_grad / autocast: none applies here."""
    threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)
    result = {'inference': {}, 'training': {}}
    try:
        torch.set_num_threads(1)
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast('cpu', enabled=False):
            for keys in _CALIBRATED_KEYS:
                result['inference'][str(keys)], result['training'][str(keys)] = _time_backends_at(keys, gen)
    finally:
        torch.set_num_threads(threads)
    return result


@functools.lru_cache(maxsize=None)
def _dense_timings() -> Dict[str, Dict[str, Dict[str, float]]]:
    return _native.measured('dense_backends_v1', _measure_dense_backends)


_MARGIN = 1.05  # a backend is taken only if measured 5% faster: a closer call is as likely noise and a loss


def _beats(name: str, rivals: Tuple[str, ...], keys: int, training: bool) -> bool:
    """Whether backend `name` measured faster here than each of `rivals` by _MARGIN in the bucket of `keys`."""
    if keys < _CALIBRATED_KEYS[0]:  # too little work to time well: the native kernel (6x SDPA at 2x2), never GEMMs
        return name == 'native'
    bucket = next((n for n in _CALIBRATED_KEYS if keys <= n), None)
    if bucket is None:
        return False
    times = _dense_timings()['training' if training else 'inference'][str(bucket)]
    return name in times and all(times[name] * _MARGIN <= times[r] for r in rivals if r in times)


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _short_cpu_self_attention(q, k, v, bias=None, scale=None, dropout_p=0.) -> bool:
    if not (q.device.type == 'cpu' and q.dtype == torch.float32 and q.shape[-2] == k.shape[-2]):
        return False
    if torch.compiler.is_compiling():
        # inductor keeps SDPA one fused kernel and runs the GEMMs' softmax between two extern calls: compiled Swin-T
        # forwards 0.91x as long on SDPA on a Zen 4 (one thread, batch 8); other captures keep the eager rule
        return False
    if capturing_graph():
        return _STATIC_BMM_TOKENS[0] <= k.shape[-2] <= _STATIC_BMM_TOKENS[1]
    if _needs_grad(bias):
        # a learned bias (relative position tables): SDPA's fused CPU kernel has no bias gradient, so SDPA runs its
        # math path, these GEMMs plus a scan of every score row for -inf (2.1 ms per Swin-T stage-1 block)
        return True
    return _beats('bmm', ('sdpa',), k.shape[-2], _needs_grad(q, k, v))


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
            and not _needs_grad(*tensors)
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
    """The range the native kernel is built for (float32, 2 threads, a Zen 3): from 2x2 windows (6x SDPA) through
    7x7 windows (1.3-2x incl. the output transpose it saves) to 196 keys; not for a handful of queries over many
    keys (the per-head key transpose dominates) nor 256 keys of dim 64 (SDPA 1.2x). The dense op also asks this
    machine's timings (_beats); the fused window path, which also saves the window partition, does not."""
    return queries >= 4 and keys <= 196


def _native_fast(q, k, v, *args, **kwargs) -> bool:
    return (_native_shapes(q, k, v, *args, **kwargs) and native_is_fast(q.shape[-2], k.shape[-2])
            and _native.library() is not None and _beats('native', ('sdpa', 'bmm'), k.shape[-2], False))


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
        q, k, v = map_linear(self.qkv, x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        x = dense_attention(q, k, v, bias=bias, dropout_p=self.attn_drop if self.training else 0.)
        return self.proj_drop(map_linear(self.proj, x.transpose(1, 2).reshape(B, N, -1)))
