"""Neighborhood attention (NAT / DiNAT) and generalized neighborhood attention (GNA: stride, causal), in 1-D, 2-D
and 3-D: each query attends its k (per axis) nearest neighbours, optionally dilated, strided or causal.

Functional API, shaped like NATTEN's (>= 0.20) `na1d` / `na2d` / `na3d`:

    na1d(q, k, v, kernel_size, dilation=1, rpb=None, scale=None, *, stride=1, is_causal=False)   (B, L, heads, d)
    na2d(...)                                                                                    (B, H, W, heads, d)
    na3d(...)                                                                                    (B, T, H, W, heads, d)

Tensors are channels-last with heads before the head dim ("heads-last" in NATTEN's words), the layout a qkv
Linear produces without a permute; the output has q's shape. `kernel_size` / `dilation` / `stride` / `is_causal`
are one value or one per axis. `rpb` is an optional relative position bias table of shape
(heads, 2*k0 - 1, ..., 2*kn - 1), the NAT/DiNAT (NATTEN <= 0.17) `rpb` parameter, added to the logits (NATTEN
>= 0.20 dropped it; here it works with every other option).

Semantics, exactly NATTEN 0.21's (its flex mask and fused kernels agree on them), per axis:

* Dilation groups: along an axis of length L with dilation d, position i belongs to group g = i % d; each group
  is the sub-grid g, g + d, g + 2d, ... of length L_g = ceil((L - g) / d), and neighborhood attention runs on
  each group independently, in group steps n = i // d (groups may differ in length by one, as in NATTEN).
* Stride s (1 <= s <= k): queries n of one stride group (n // s equal) share the neighbourhood of its leader,
  the centre query (n // s) * s + s // 2 (the right one of the two centres for even s), or the group's last
  position where the stride group is cut by the border. s = k on a map that is a multiple of k is blocked
  (Swin-style non-shifted window) attention; s = 1 is plain neighborhood attention.
* Non-causal window: keys [start, start + k) with start = clamp(leader - k // 2, 0, L_g - k): the window shifts
  inward at the edges, so every query sees exactly k real neighbours per axis.
* Causal (per axis): keys m with n - m >= 0 and leader' - m < k, leader' = min((n // s) * s + s - 1, L_g - 1)
  the last query of the stride group: at most k keys, fewer near the start.
* This needs every group to hold at least k positions, i.e. L >= k * d per axis (NATTEN's requirement); smaller
  maps are an error here and are handled by the module (`NeighborhoodAttention2D`: dilation clipping and/or zero
  padding).
* Relative position bias: the logit of query n and key m of a group gets rpb[h, (m - n) + k - 1] per axis
  (offsets in group steps, i.e. after dividing by the dilation). The query is always inside its window, so the
  offset lies in [-(k - 1), k - 1] with stride and causal masks too.

Backends (`force_backend(name, op='neighborhood')` picks one); all serve every option unless noted:

* 'reference': explicit neighbourhood gather through index tensors. Obviously correct, O(N k^n d) memory (N
  tokens): for tests and small sizes only.
* 'cpu' (default off-GPU, generic everywhere): each dilation group is cut into query tiles (per axis a multiple
  of the stride); the union of the windows of a tile is a box (windows are contiguous and move monotonically
  with the query, so it never leaves the map), gathered and attended densely by `scaled_dot_product_attention`
  with an additive mask that encodes the exact neighbourhood (+ rpb). With stride = kernel the tiles are the
  windows and nothing is masked. Tiles go through in cache-sized chunks, so the full N x N score matrix never
  exists: memory is the output plus O(N * box) for the mask. Exact, differentiable (rpb included).
* 'flex' (default on CUDA with rpb, or without NATTEN; head dim >= 16): `torch.nn.attention.flex_attention`,
  compiled, on the (B, heads, N, d) map: a cached BlockMask of the exact neighbourhood and a score_mod adding the
  rpb. Dilated maps are flattened group-major (each dilation group contiguous), so the BlockMask stays sparse.
  Forced on CPU it runs compiled too when no gradient is needed (tests hold the CUDA path's mask to the reference).
* 'natten': NATTEN's kernels (`natten.na1d/na2d/na3d`), chosen for CUDA tensors when NATTEN imports and no rpb is
  passed (NATTEN >= 0.20 has no rpb). Forced on CPU it runs NATTEN's CPU path (flex, forward only).
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import to_2tuple, trunc_normal_

from .dispatch import AttentionOp
from .._cache import shape_cache
from ..mlp import map_linear

__all__ = ['neighborhood_attention', 'na1d', 'na2d', 'na3d', 'natten_available', 'NeighborhoodAttention2D',
           'clip_dilation']

IntOr2 = Union[int, Tuple[int, int]]
Ints = Union[int, Sequence[int]]
Bools = Union[bool, Sequence[bool]]

neighborhood_attention = AttentionOp(
    'neighborhood',
    """1-D / 2-D / 3-D (generalized) neighborhood attention (NATTEN semantics), see zoo.layers.attention.neighborhood.

    Called as (q, k, v, kernel_size, dilation, rpb, scale, stride=None, is_causal=None) with q, k, v:
    (B, *spatial, heads, d), kernel_size / dilation / stride per-axis int tuples, is_causal a per-axis bool tuple
    (None: stride 1, non-causal), rpb None or (heads, *(2k - 1)), scale a float. Returns q's shape.""",
)


# --- index math shared by every backend: one axis at a time ------------------------------------------------
def _window_bounds(n: torch.Tensor, group_len, kernel: int, stride: int, causal: bool):
    """[lo, hi) keys (group steps) of query n in a dilation group of length `group_len` (a tensor broadcasting
    with n); see the module docstring. lo and hi never decrease with n, which the tiled path relies on."""
    if causal:
        leader = torch.minimum(n // stride * stride + stride - 1, group_len - 1)
        return (leader - kernel + 1).clamp(min=0), n + 1
    leader = torch.minimum(n // stride * stride + stride // 2, group_len - 1)
    lo = torch.minimum((leader - kernel // 2).clamp(min=0), group_len - kernel)
    return lo, lo + kernel


def _axis_windows(length: int, kernel: int, dilation: int, stride: int = 1, causal: bool = False):
    """(group, n, lo, hi), each (length,): the dilation group and group step of every position along one axis, and
    the [lo, hi) key range of its window in group steps."""
    i = torch.arange(length)
    group, n = i % dilation, i // dilation
    lo, hi = _window_bounds(n, (length - group + dilation - 1) // dilation, kernel, stride, causal)
    return group, n, lo, hi


@shape_cache(maxsize=256)
def _axis_neighbors(length: int, kernel: int, dilation: int, stride: int = 1, causal: bool = False):
    """(L, k) key positions, (L, k) rpb indices (0 .. 2k-2) and (L, k) validity of every query position along one
    axis. A causal window may hold fewer than k keys: its invalid slots point at the query itself."""
    group, n, lo, _ = _axis_windows(length, kernel, dilation, stride, causal)
    steps = lo[:, None] + torch.arange(kernel)  # L, k (in group steps)
    valid = steps <= n[:, None] if causal else torch.ones_like(steps, dtype=torch.bool)
    steps = torch.where(valid, steps, n[:, None])
    return group[:, None] + steps * dilation, steps - n[:, None] + kernel - 1, valid


def _spread(tables: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Broadcast views of per-axis tables for an outer product over the axes: table i of shape (X, Y, ...) gets
    shape (1.., X, 1.., 1.., Y, 1.., ...), its dim j moved to position j * n + i (n = number of tables). E.g. two
    (L_i, k_i) tables combine into (L_0, L_1, k_0, k_1)."""
    n = len(tables)
    out = []
    for i, t in enumerate(tables):
        shape = [1] * (n * t.ndim)
        for j, size in enumerate(t.shape):
            shape[j * n + i] = size
        out.append(t.reshape(shape))
    return out


def _raster(positions: Sequence[torch.Tensor], sizes: Sequence[int]) -> torch.Tensor:
    """Flat row-major index into a map of `sizes` from per-axis position tables (outer product, see _spread)."""
    flat = 0
    for p, stride in zip(_spread(positions), [math.prod(sizes[i + 1:]) for i in range(len(sizes))]):
        flat = flat + p * stride
    return flat


def _options(q: torch.Tensor, stride, is_causal) -> Tuple[Tuple[int, ...], Tuple[bool, ...]]:
    """The per-axis stride and causal flags of a backend call (None: the plain NA defaults)."""
    nd = q.ndim - 3
    return tuple(stride or (1,) * nd), tuple(bool(c) for c in (is_causal or (False,) * nd))


def _per_axis(value, nd: int, name: str, kind=int) -> tuple:
    """One value per axis from a scalar or a sequence of nd."""
    try:
        values = tuple(value)
    except TypeError:  # a scalar (int, bool, numpy integer, ...)
        values = (value,) * nd
    if len(values) != nd:
        raise ValueError(f'{name} must be one {kind.__name__} or {nd} (one per axis), got {value!r}')
    return tuple(kind(x) for x in values)


def _check(q, k, v, kernel_size, dilation, stride, rpb):
    spatial = q.shape[1:-2]
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f'neighborhood attention needs q, k, v of one shape, got {tuple(q.shape)}, '
                         f'{tuple(k.shape)}, {tuple(v.shape)}')
    for size, ks, d, s, axis in zip(spatial, kernel_size, dilation, stride, range(len(spatial))):
        if ks < 1 or d < 1 or s < 1:
            raise ValueError(f'kernel size, dilation and stride must be positive, got kernel {ks}, dilation {d}, '
                             f'stride {s} (axis {axis})')
        if s > ks:
            raise ValueError(f'stride must not exceed the kernel size, got stride {s} > kernel {ks} (axis {axis})')
        if size < ks * d:
            raise ValueError(f'neighborhood attention needs size >= kernel_size * dilation = {ks} * {d} on axis '
                             f'{axis}, got {size} (pad the map or clip the dilation, as NeighborhoodAttention2D '
                             f'does)')
    if rpb is not None:
        want = (q.shape[-2], *(2 * ks - 1 for ks in kernel_size))
        if tuple(rpb.shape) != want:
            raise ValueError(f'rpb must have shape (heads, {", ".join(["2k-1"] * len(kernel_size))}) = {want}, '
                             f'got {tuple(rpb.shape)}')


def _scale(q: torch.Tensor, scale: Optional[float]) -> float:
    return q.shape[-1] ** -0.5 if scale is None else scale


# --- reference ------------------------------------------------------------------------------------------
@neighborhood_attention.register('reference', priority=0)
def _na_reference(q, k, v, kernel_size, dilation, rpb=None, scale=None, stride=None, is_causal=None):
    B, *spatial, heads, d = q.shape
    stride, is_causal = _options(q, stride, is_causal)
    axes = [[t.to(q.device) for t in _axis_neighbors(*a)]
            for a in zip(spatial, kernel_size, dilation, stride, is_causal)]
    N, K = math.prod(spatial), math.prod(kernel_size)
    keys = _raster([a[0] for a in axes], spatial).reshape(N, K)
    values, keys = v.reshape(B, N, heads, d)[:, keys], k.reshape(B, N, heads, d)[:, keys]  # B, N, K, heads, d
    attn = torch.einsum('bnhd,bnkhd->bnhk', q.reshape(B, N, heads, d) * _scale(q, scale), keys)
    if rpb is not None:
        attn = attn + rpb[(slice(None), *_spread([a[1] for a in axes]))].reshape(heads, N, K).transpose(0, 1)
    if any(is_causal):
        valid = functools.reduce(torch.logical_and, _spread([a[2] for a in axes])).reshape(N, 1, K)
        attn = attn.masked_fill(~valid, float('-inf'))
    return torch.einsum('bnhk,bnkhd->bnhd', attn.softmax(-1), values).reshape(q.shape)


# --- cpu / generic: tiled dense attention over the boxes that hold a tile's windows ------------------------
def _tile_size(kernel_size, stride, group_size) -> Tuple[int, ...]:
    """Query tile per axis. Keys per query are prod(tile + k - 1) against prod(k) needed, so smaller tiles waste
    less, but SDPA wants >= 32 queries per tile. 2-D, measured (2 threads, 56x56 map, kernel 7): (4, 8) runs within
    ~3x of window attention with the same FLOPs, (7, 7) ~3.2x, (8, 8) ~3.3x, (4, 4) ~3.1x. Leading axes of a 3-D
    map take 2 (each costs a factor (k + 1) / 2 in keys); 1-D takes >= 32 queries. Each axis is a multiple of its
    stride, so a stride group never straddles two tiles; stride = kernel (blocked attention) tiles by the windows
    themselves: no masked key at all."""
    nd = len(kernel_size)
    if nd == 1:
        tile = [max(kernel_size[0] + 1, 32)]
    else:
        rows = max(2, (kernel_size[-2] + 1) // 2)
        lead = [min(2, k) for k in kernel_size[:-2]]
        tile = lead + [rows, max(kernel_size[-1] + 1, -(-32 // (rows * math.prod(lead))))]
    tile = [s if s == k else -(-t // s) * s for t, s, k in zip(tile, stride, kernel_size)]
    return tuple(min(t, g) for t, g in zip(tile, group_size))


@shape_cache(maxsize=128)
def _axis_plan(length: int, kernel: int, dilation: int, stride: int, causal: bool, tile: int):
    """Tiling of one axis: every dilation group is cut into tiles of `tile` queries (groups padded to the longest).

    The union of the windows of a tile's queries is a run of `rect` group positions (windows are runs whose ends
    never move back, so the union of consecutive queries' windows is one run; `rect` is the longest over the tiles).
    Returns
      q_pos (A, tile), k_pos (A, rect): map positions of each axis-tile's query slots / key run, A = d * tiles
        (slots past the group's end point at position 0; their queries are dropped, their keys masked out);
      slot (length,): the (axis-tile * tile + i) slot of every map position;
      inverse (A,), valid (u, tile, rect) bool, rpb_index (u, tile, rect): the u distinct (query, key) patterns
        (interior tiles share one) and the pattern of every axis-tile.
    """
    glen = -(-length // dilation)
    num_tiles = -(-glen // tile)
    g = torch.arange(dilation)[:, None, None]
    true_len = (length - g + dilation - 1) // dilation  # d, 1, 1
    n = torch.arange(num_tiles)[:, None] * tile + torch.arange(tile)  # tiles, tile: query group positions
    lo, hi = _window_bounds(n, true_len, kernel, stride, causal)  # d, tiles, tile
    first, last = lo[..., 0], torch.minimum(hi, true_len).amax(-1)  # d, tiles: the run holding the tile's windows
    rect = int((last - first).max())
    rect_start = torch.minimum(first, true_len[..., 0] - rect).clamp(min=0)
    m = rect_start[..., None, None] + torch.arange(rect)  # d, tiles, 1, rect: key group positions
    valid = (m >= lo[..., None]) & (m < hi[..., None]) & (m < true_len[..., None])  # d, tiles, tile, rect
    # clamped only for the padding query slots past a group's end (their outputs are dropped)
    rpb_index = torch.where(valid, m - n[..., None] + kernel - 1, torch.zeros_like(valid, dtype=torch.long))
    rpb_index = rpb_index.clamp(0, 2 * kernel - 2)

    def to_map(pos, limit):  # group positions -> map positions, 0 where past the group's end
        return torch.where(pos < limit, g + pos * dilation, torch.zeros_like(pos)).flatten(0, 1)

    q_pos = to_map(n[None].expand(dilation, -1, -1), true_len)
    k_pos = to_map(m[:, :, 0], true_len)
    i = torch.arange(length)
    slot = ((i % dilation) * num_tiles + (i // dilation) // tile) * tile + (i // dilation) % tile
    code = torch.cat([valid.long(), rpb_index], -1).flatten(2).flatten(0, 1)  # A, 2 * tile * rect
    uniq, inverse = torch.unique(code, dim=0, return_inverse=True)
    uniq = uniq.view(-1, tile, 2 * rect)
    return q_pos, k_pos, slot, inverse, uniq[..., :rect].bool(), uniq[..., rect:]


@shape_cache(maxsize=128, constant_under_export=True)  # _axis_plan's torch.unique: data-dependent sizes
def _plan(spatial, kernel_size, dilation, stride, is_causal, tile, device):
    """The N-D tiling as flat (raster) indexes: queries (T * prod(tile),), keys (T * prod(rect),), and the output
    slot of every map position (prod(spatial),), for T = prod(A_i) tiles, plus each axis' pattern tables."""
    plans = [[t.to(device) for t in _axis_plan(*a)] for a in zip(spatial, kernel_size, dilation, stride, is_causal,
                                                                 tile)]
    q_index = _raster([p[0] for p in plans], spatial).flatten()
    k_index = _raster([p[1] for p in plans], spatial).flatten()
    # map position -> (axis-tile a_i, slot j_i) per axis -> flat index of the (A_0.., tile_0..) output layout
    tiles = [p[0].shape[0] for p in plans]
    tile_slot = _raster([p[2] // t for p, t in zip(plans, tile)], tiles)
    in_tile = _raster([p[2] % t for p, t in zip(plans, tile)], tile)
    out_index = (tile_slot * math.prod(tile) + in_tile).flatten()
    return q_index, k_index, out_index, [p[3:] for p in plans]


def _tile_mask(rpb, dtype, device, axes):
    """(T, heads or 1, prod(tile), prod(rect)) additive mask: -inf outside each query's neighbourhood, rpb inside.
    Built for the few distinct tile patterns (per axis), then expanded to every tile by one gather; (1, ...) when
    all T tiles share one pattern."""
    inverses, valids, rpb_indexes = zip(*axes)
    nd = len(axes)
    valid = functools.reduce(torch.logical_and, _spread(valids))  # u_0.., tile_0.., rect_0..
    if rpb is not None:
        mask = rpb[(slice(None), *_spread(rpb_indexes))]  # heads, u.., tile.., rect..
        mask = mask.masked_fill(~valid, float('-inf')).to(dtype)
    else:
        mask = torch.zeros(valid.shape, dtype=dtype, device=device).masked_fill_(~valid, float('-inf'))[None]
    mask = mask.reshape(*mask.shape[:1 + nd], math.prod(valid.shape[nd:2 * nd]), math.prod(valid.shape[2 * nd:]))
    if all(len(v) == 1 for v in valids):  # every tile alike (blocked attention, one-tile maps): (1, ...), broadcast
        return mask.flatten(1, nd).transpose(0, 1)
    return mask[(slice(None), *_spread(inverses))].flatten(1, nd).transpose(0, 1)


# Bytes of key boxes gathered per SDPA call. Small enough to stay in cache and below glibc's mmap threshold
# (each larger temporary is a fresh mmap, page-faulted on first touch: that alone doubled the time at batch 8).
_CHUNK_BYTES = 4 * 2 ** 20


def _na_tiled(q, k, v, kernel_size, dilation, rpb=None, scale=None, stride=None, is_causal=None, tile=None):
    """Each tile's queries attend the key box around them by SDPA; a mask keeps every query to its own
    neighbourhood. Images (or, for big maps, runs of tiles) go through in cache-sized chunks."""
    B, *spatial, heads, d = q.shape
    N = math.prod(spatial)
    scale = _scale(q, scale)
    stride, is_causal = _options(q, stride, is_causal)
    tile = tile or _tile_size(kernel_size, stride, [-(-s // dl) for s, dl in zip(spatial, dilation)])
    q_index, k_index, out_index, axes = _plan(tuple(spatial), tuple(kernel_size), tuple(dilation), stride, is_causal,
                                              tuple(tile), q.device)
    mask = _tile_mask(rpb, q.dtype, q.device, axes)  # tiles or 1 (shared by all), heads or 1, L, S
    L, S = mask.shape[-2:]
    tiles, shared = q_index.numel() // L, mask.shape[0] == 1
    q_index, k_index = q_index.view(tiles, L), k_index.view(tiles, S)
    q, k, v = (x.reshape(B, N, heads, d) for x in (q, k, v))
    out = q.new_empty(B, tiles, L, heads, d)

    # chunks of (images, tiles, their mask); whole images share one (images * tiles)-row mask, built once
    tile_bytes = heads * S * d * q.element_size()
    images = 0 if torch.compiler.is_compiling() else max(1, min(B, _CHUNK_BYTES // (tile_bytes * tiles)))
    if not images:  # compiling: one chunk, as a loop over (or a slice by) the batch would fix its size
        whole = mask if shared else mask.expand(B, -1, -1, -1, -1).reshape(B * tiles, -1, L, S)
        chunks = [(slice(None), slice(None), whole)]
    elif images > 1:
        whole = mask if shared else mask.expand(images, -1, -1, -1, -1).reshape(images * tiles, -1, L, S)
        chunks = [(slice(b, b + images), slice(None), whole if shared else whole[:min(images, B - b) * tiles])
                  for b in range(0, B, images)]
    else:  # big maps: runs of tiles of one image
        step = max(1, _CHUNK_BYTES // tile_bytes)
        chunks = [(slice(b, b + 1), slice(t, t + step), mask if shared else mask[t:t + step])
                  for b in range(B) for t in range(0, tiles, step)]
    for bs, ts, chunk_mask in chunks:
        qi, ki = q_index[ts], k_index[ts]

        def gather(x, index):  # (b, N, heads, d) -> (b * n, heads, len, d), a view of the gathered rows
            rows = x[bs].index_select(1, index.flatten())  # SDPA reads the strided heads: no second copy
            return rows.view(-1, index.shape[1], heads, d).transpose(1, 2)

        o = F.scaled_dot_product_attention(gather(q, qi), gather(k, ki), gather(v, ki), attn_mask=chunk_mask,
                                           scale=scale)
        out[bs, ts] = o.transpose(1, 2).view(-1, len(qi), L, heads, d)
    return out.view(B, tiles * L, heads, d).index_select(1, out_index).view(B, *spatial, heads, d)


@neighborhood_attention.register('cpu', priority=10)
def _na_cpu(q, k, v, kernel_size, dilation, rpb=None, scale=None, stride=None, is_causal=None):
    return _na_tiled(q, k, v, kernel_size, dilation, rpb, scale, stride, is_causal)


# --- flex: torch's flex_attention with a neighbourhood BlockMask and an rpb score_mod ------------------------
@functools.lru_cache(maxsize=1)
def _flex_module():
    """`torch.nn.attention.flex_attention` when this torch has it, else None."""
    try:
        from torch.nn.attention import flex_attention
        return flex_attention
    except ImportError:
        return None


@functools.lru_cache(maxsize=2)
def _flex_compiled(device_type: str = 'cuda'):
    """torch.compile(flex_attention), created once per device type on first use: the fused kernel (eager
    flex_attention materializes the N x N scores). The mods close over tables only (window bounds, map sizes and
    dilations live in tensors), so new maps only change shapes; the number of axes and rpb on/off change the code.
    CPU (forward only, for tests): static shapes, one compile per map size (past dynamo's recompile limit flex runs
    eagerly, with torch's warning), because with dynamic shapes inductor's CPU flex template (torch 2.14.1) emits
    C++ that does not compile (`cur_qSplitSize2` undeclared) for the tables the mods index."""
    return torch.compile(_flex_module().flex_attention, dynamic=False if device_type == 'cpu' else None)


def _expand(tables: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Per-axis (L_i,) tables, each expanded over the whole map and flattened to (N,) in raster order."""
    return [t.reshape(-1) for t in torch.broadcast_tensors(*_spread(tables))]


@shape_cache(maxsize=64)
def _flex_plan(spatial, kernel_size, dilation, stride, is_causal, device):
    """Token order, flat tables and the BlockMask of the neighbourhood pattern on the flattened (N) map.

    Order: dilation-group-major (all of group (0, 0) in raster order, then group (0, 1), ...), so that the 128-token
    blocks of a dilated map hold whole groups and attend few key blocks (kernel 7: 73 instead of 409 of the 625
    score blocks at 56x56 dilation 8, 19 instead of 49 at 28x28 dilation 4); `perm` (None when undilated: raster
    order) lists the map position of each slot, `inverse` the slot of each map position.
    Tables, one int per slot: `group` (the dilation group as one id) and per axis (n, lo, hi): the position inside
    the group and the [lo, hi) key range of the slot's window, in group steps. Key m is in query q's neighbourhood
    iff it is in the same group and lo[q] <= n[m] < hi[q] on every axis."""
    N = math.prod(spatial)
    axes = [_axis_windows(*a) for a in zip(spatial, kernel_size, dilation, stride, is_causal)]
    ns, los, his = (_expand([a[j] for a in axes]) for j in (1, 2, 3))
    group_id = sum(g * math.prod(dilation[i + 1:]) for i, g in enumerate(_expand([a[0] for a in axes])))
    columns = [t for axis in zip(ns, los, his) for t in axis]  # n, lo, hi of axis 0, then axis 1, ...
    perm = inverse = None
    if any(dl > 1 for dl in dilation):
        perm = torch.argsort(group_id * N + torch.arange(N))
        inverse = torch.argsort(perm).to(device)
        group_id, columns = group_id[perm], [t[perm] for t in columns]
        perm = perm.to(device)
    tables = [t.to(device=device, dtype=torch.int32) for t in (group_id, *columns)]
    mask_mod = _flex_mask_mod(tables[0], tables[1:])
    create = _flex_module().create_block_mask
    if device.type == 'cuda' and N ** 2 > 2 ** 24:
        create = torch.compile(create)  # eager create_block_mask materializes the N^2 mask (and int temporaries)
    return tables, create(mask_mod, None, None, N, N, device=device), perm, inverse


def _flex_mask_mod(group, columns):
    axes = [columns[i:i + 3] for i in range(0, len(columns), 3)]

    def mask_mod(b, h, q_idx, kv_idx):
        keep = group[q_idx] == group[kv_idx]
        for n, lo, hi in axes:
            m = n[kv_idx]
            keep = keep & (m >= lo[q_idx]) & (m < hi[q_idx])
        return keep
    return mask_mod


def _flex_rpb_score_mod(rpb: torch.Tensor, ns):
    """score + rpb[h, m_0 - n_0 + k_0 - 1, ...], (m_i - n_i) the key's offset from the query in group steps. The
    indices are clamped only for masked-out pairs (flex evaluates the score_mod on whole blocks)."""
    sizes = rpb.shape[1:]

    def score_mod(score, b, h, q_idx, kv_idx):
        index = [(n[kv_idx] - n[q_idx] + size // 2).clamp(0, size - 1) for n, size in zip(ns, sizes)]
        return score + rpb[(h, *index)].to(score.dtype)
    return score_mod


def _flex_runs(q, k, v, kernel_size, dilation, rpb=None, scale=None, stride=None, is_causal=None) -> bool:
    return _flex_module() is not None


def _flex_supports(q, k, v, kernel_size, dilation, rpb=None, scale=None, stride=None, is_causal=None) -> bool:
    """Chosen for CUDA tensors only (on CPU eager flex materializes the scores and has no backward), in the dtypes
    and head sizes its Triton kernels take (head dim >= 16; smaller heads take the tiled path)."""
    return (q.is_cuda and q.dtype in (torch.float32, torch.float16, torch.bfloat16) and q.shape[-1] >= 16
            and _flex_module() is not None)


@neighborhood_attention.register('flex', priority=15, supports=_flex_supports, runs=_flex_runs)
def _na_flex(q, k, v, kernel_size, dilation, rpb=None, scale=None, stride=None, is_causal=None):
    """flex_attention on the (B, heads, N, d) flattened map (group-major when dilated): the BlockMask skips key
    blocks outside every neighbourhood, the mask_mod keeps each query to its own neighbours, the score_mod adds the
    rpb. Compiled (fused kernel, differentiable incl. rpb) on CUDA; eager elsewhere (materializes the scores; torch
    has no flex backward on CPU), for testing only: 'flex' is chosen automatically for CUDA tensors.
    On CPU without autograd the compiled kernel runs too (torch >= 2.14 compiles flex's forward for CPU, BlockMask
    sparsity and score_mod included), so the CUDA path's mask and score_mod are testable without a GPU."""
    B, *spatial, heads, d = q.shape
    N = math.prod(spatial)
    stride, is_causal = _options(q, stride, is_causal)
    tables, block_mask, perm, inverse = _flex_plan(tuple(spatial), tuple(kernel_size), tuple(dilation), stride,
                                                   is_causal, q.device)
    score_mod = None if rpb is None else _flex_rpb_score_mod(rpb, tables[1::3])
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, rpb))
    flex = _flex_compiled(q.device.type) if q.is_cuda or not needs_grad else _flex_module().flex_attention

    def tokens(x):  # (B, *spatial, heads, d) -> (B, heads, N, d), group-major when dilated
        x = x.reshape(B, N, heads, d)
        return (x if perm is None else x.index_select(1, perm)).transpose(1, 2)

    out = flex(tokens(q), tokens(k), tokens(v), score_mod=score_mod, block_mask=block_mask, scale=_scale(q, scale))
    out = out.transpose(1, 2)
    return (out if inverse is None else out.index_select(1, inverse)).reshape(q.shape)


# --- NATTEN (fused kernels on CUDA, flex on CPU; no rpb) ------------------------------------------------------
_NATTEN_MIN = (0, 20)


@functools.lru_cache(maxsize=1)
def _natten():
    """The `natten` module when it imports and is new enough (>= 0.20, heads-last `na1d/na2d/na3d` with stride
    and is_causal), else None.

    One warning on failure; the other backends cover every call, so NATTEN is never required."""
    try:
        import natten
        version = tuple(int(p) for p in natten.__version__.split('+')[0].split('.')[:2])
        if version < _NATTEN_MIN:
            raise ImportError(f'natten {natten.__version__} is older than {".".join(map(str, _NATTEN_MIN))}')
        natten.na1d, natten.na2d, natten.na3d  # noqa: B018  (the API this adapter uses)
        return natten
    except Exception as e:  # ImportError, or a binary built for another torch
        if not isinstance(e, ModuleNotFoundError):
            warnings.warn(f'zoo: NATTEN is installed but unusable ({e}); neighborhood attention uses the zoo '
                          f'backends', RuntimeWarning)
        return None


def natten_available() -> bool:
    return _natten() is not None


def _natten_runs(q, k, v, kernel_size, dilation, rpb=None, scale=None, stride=None, is_causal=None) -> bool:
    """No rpb; off CUDA NATTEN runs flex_attention eagerly, which has no backward there: inference only."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    return rpb is None and natten_available() and (q.is_cuda or not needs_grad)


@neighborhood_attention.register(
    'natten', priority=20, runs=_natten_runs,
    supports=lambda q, *args, **kwargs: q.is_cuda and _natten_runs(q, *args, **kwargs))
def _na_natten(q, k, v, kernel_size, dilation, rpb=None, scale=None, stride=None, is_causal=None):
    stride, is_causal = _options(q, stride, is_causal)
    na = getattr(_natten(), f'na{q.ndim - 3}d')
    return na(q, k, v, kernel_size=tuple(kernel_size), stride=stride, dilation=tuple(dilation), is_causal=is_causal,
              scale=_scale(q, scale))


# --- functional API -----------------------------------------------------------------------------------------
def _na(nd: int, q, k, v, kernel_size, dilation, rpb, scale, stride, is_causal) -> torch.Tensor:
    if q.ndim != nd + 3:
        layout = ('L',), ('H', 'W'), ('T', 'H', 'W')
        raise ValueError(f'na{nd}d expects (B, {", ".join(layout[nd - 1])}, heads, d) tensors, got shape '
                         f'{tuple(q.shape)}')
    kernel_size, dilation, stride = (_per_axis(x, nd, name) for x, name in
                                     ((kernel_size, 'kernel_size'), (dilation, 'dilation'), (stride, 'stride')))
    is_causal = _per_axis(is_causal, nd, 'is_causal', bool)
    _check(q, k, v, kernel_size, dilation, stride, rpb)
    scale = _scale(q, scale)
    args = (q, k, v, kernel_size, dilation, rpb, scale, stride, is_causal)
    if torch.jit.is_tracing():
        # FLOP counting (fvcore traces the model): the reference backend's two einsums are exactly the MACs the
        # NAT/DiNAT papers (NATTEN's counter) report, q.k and attn.v over each query's neighbourhood; the cpu
        # path's tiles would be counted with their masked-out keys.
        return neighborhood_attention(*args, backend='reference')
    return neighborhood_attention(*args)


def na1d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: Ints, dilation: Ints = 1,
         rpb: Optional[torch.Tensor] = None, scale: Optional[float] = None, *, stride: Ints = 1,
         is_causal: Bools = False) -> torch.Tensor:
    """1-D neighborhood attention on (B, L, heads, d) tensors, rpb (heads, 2k - 1); see the module docstring."""
    return _na(1, q, k, v, kernel_size, dilation, rpb, scale, stride, is_causal)


def na2d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: Ints, dilation: Ints = 1,
         rpb: Optional[torch.Tensor] = None, scale: Optional[float] = None, *, stride: Ints = 1,
         is_causal: Bools = False) -> torch.Tensor:
    """2-D neighborhood attention on (B, H, W, heads, d) tensors, rpb (heads, 2kh - 1, 2kw - 1); see the module
    docstring."""
    return _na(2, q, k, v, kernel_size, dilation, rpb, scale, stride, is_causal)


def na3d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: Ints, dilation: Ints = 1,
         rpb: Optional[torch.Tensor] = None, scale: Optional[float] = None, *, stride: Ints = 1,
         is_causal: Bools = False) -> torch.Tensor:
    """3-D (video) neighborhood attention on (B, T, H, W, heads, d) tensors, rpb (heads, 2kt - 1, 2kh - 1, 2kw - 1);
    see the module docstring."""
    return _na(3, q, k, v, kernel_size, dilation, rpb, scale, stride, is_causal)


# --- module -------------------------------------------------------------------------------------------------
def clip_dilation(size: int, kernel: int, dilation: int) -> int:
    """The largest dilation <= `dilation` that fits `size` (size >= kernel * dilation), at least 1."""
    return max(1, min(dilation, size // kernel))


class NeighborhoodAttention2D(nn.Module):
    """Multi-head neighborhood attention on (B, H, W, C) maps, with the NAT/DiNAT relative position bias.

    Parameters: `qkv` (fused Linear), `rpb` (heads, 2k-1, 2k-1) when rel_pos_bias, `proj`.

    Maps smaller than kernel * dilation (detection/segmentation inputs, small test sizes):
      small_map='clip' (default): per axis, the dilation is clipped to the largest that fits
        (max(1, size // kernel)); a side still smaller than the kernel is zero-padded (bottom/right, before
        the qkv projection, output cropped), as NATTEN <= 0.14's module does.
      small_map='pad': the authors' exact behaviour (NATTEN 0.14 module used by the released code): the map is
        zero-padded to kernel * dilation (bottom/right, before qkv) and cropped after.
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: IntOr2 = 7, dilation: IntOr2 = 1,
                 qkv_bias: bool = True, rel_pos_bias: bool = True, qk_scale: Optional[float] = None,
                 attn_drop: float = 0., proj_drop: float = 0., small_map: str = 'clip'):
        super().__init__()
        if small_map not in ('clip', 'pad'):
            raise ValueError(f"small_map must be 'clip' or 'pad', got {small_map!r}")
        if attn_drop > 0:
            raise NotImplementedError('attention dropout is not supported by neighborhood attention')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.kernel_size = to_2tuple(kernel_size)
        self.dilation = to_2tuple(dilation)
        self.small_map = small_map
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if rel_pos_bias:
            kh, kw = self.kernel_size
            self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kh - 1, 2 * kw - 1))
            trunc_normal_(self.rpb, std=.02, a=-2., b=2.)
        else:
            self.register_parameter('rpb', None)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def effective(self, H: int, W: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """(dilation, padded size) used on an H x W map."""
        if self.small_map == 'clip':
            dil = tuple(clip_dilation(s, k, d) for s, k, d in zip((H, W), self.kernel_size, self.dilation))
        else:
            dil = self.dilation
        size = tuple(max(s, k * d) for s, k, d in zip((H, W), self.kernel_size, dil))
        return dil, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        dilation, (Hp, Wp) = self.effective(H, W)
        if (Hp, Wp) != (H, W):
            x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))
        q, k, v = map_linear(self.qkv, x).view(B, Hp, Wp, 3, self.num_heads, self.head_dim).unbind(3)
        x = na2d(q, k, v, self.kernel_size, dilation, rpb=self.rpb, scale=self.scale).reshape(B, Hp, Wp, -1)
        if (Hp, Wp) != (H, W):
            x = x[:, :H, :W]
        return self.proj_drop(map_linear(self.proj, x))

    def extra_repr(self) -> str:
        return (f'num_heads={self.num_heads}, kernel_size={self.kernel_size}, dilation={self.dilation}, '
                f'rel_pos_bias={self.rpb is not None}, small_map={self.small_map!r}')
