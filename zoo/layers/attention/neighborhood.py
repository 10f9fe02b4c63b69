"""Neighborhood attention (NAT / DiNAT): each query attends its k x k nearest neighbours, optionally dilated.

Functional API, shaped like NATTEN's (>= 0.20) `na2d` / `na1d`:

    na2d(q, k, v, kernel_size, dilation=1, rpb=None, scale=None)   q, k, v: (B, H, W, heads, d) -> (B, H, W, heads, d)
    na1d(q, k, v, kernel_size, dilation=1, rpb=None, scale=None)   q, k, v: (B, L, heads, d)    -> (B, L, heads, d)

Tensors are channels-last with heads before the head dim ("heads-last" in NATTEN's words), the layout a qkv
Linear produces without a permute. `kernel_size` / `dilation` are ints or per-axis pairs; the attention is
non-causal. `rpb` is an optional relative position bias table of shape (heads, 2*kh - 1, 2*kw - 1) (1-D:
(heads, 2k - 1)), the NAT/DiNAT (NATTEN <= 0.17) `rpb` parameter, added to the logits.

Semantics, exactly NATTEN's (`natten2dqkrpb` / `natten2dav` and the fused kernels agree on them):

* Dilation groups: along an axis of length L with dilation d, position i belongs to group g = i % d; each group
  is the sub-grid g, g + d, g + 2d, ... of length ceil((L - g) / d), and neighborhood attention runs on each
  group independently (so when L is not a multiple of d the groups differ in length by one, as in NATTEN).
* Borders: inside its group, query n attends keys [s, s + k) with s = clamp(n - k // 2, 0, L_g - k): the window
  shifts inward at the edges, so every query sees exactly k (per axis) real neighbours. This needs every group
  to hold at least k positions, i.e. L >= k * d per axis (NATTEN's requirement); smaller maps are an error
  here and are handled by the module (`NeighborhoodAttention2D`: dilation clipping and/or zero padding).
* Relative position bias: the logit of query n and key m of a group gets rpb[h, (m - n) + k - 1] per axis
  (offsets measured in group steps, i.e. after dividing by the dilation).

Backends (`force_backend(name, op='neighborhood')` picks one):

* 'reference': explicit neighbourhood gather through index tensors. Obviously correct, O(HW k^2 d) memory:
  for tests and small sizes only.
* 'cpu' (default off-GPU, generic everywhere): each dilation group is cut into th x tw query tiles; the union
  of the neighbourhoods of a tile is a (th + kh - 1) x (tw + kw - 1) rectangle (windows shift inward, so it
  never leaves the map), gathered and attended densely by `scaled_dot_product_attention` with an additive
  mask that encodes the exact neighbourhood (+ rpb). Tiles go through in cache-sized chunks, so the full
  HW x HW score matrix never exists and the temporaries are a few MB whatever the map size: memory is the
  output plus O(HW k^2) for the mask. Exact, differentiable (rpb included).
* 'flex' (default on CUDA with rpb, or without NATTEN; head dim >= 16): `torch.nn.attention.flex_attention`, compiled,
  on the (B, heads, H*W, d) map: a cached BlockMask of the exact neighbourhood and a score_mod adding the rpb.
  Dilated maps are flattened group-major (each dilation group contiguous), so the BlockMask stays sparse.
  Forced on CPU it runs compiled too when no gradient is needed (tests hold the CUDA path's mask to the reference).
* 'natten': NATTEN's fused kernels (`natten.na2d`), for CUDA tensors when NATTEN imports and no rpb is
  passed (NATTEN >= 0.20 has no rpb). Models trained with rpb (the released NAT/DiNAT) take the other paths.
"""
from __future__ import annotations

import functools
import warnings
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import to_2tuple, trunc_normal_

from .dispatch import AttentionOp
from .._cache import shape_cache

__all__ = ['neighborhood_attention', 'na2d', 'na1d', 'natten_available', 'NeighborhoodAttention2D',
           'clip_dilation']

IntOr2 = Union[int, Tuple[int, int]]

neighborhood_attention = AttentionOp(
    'neighborhood',
    """2-D neighborhood attention (NATTEN semantics), see zoo.layers.attention.neighborhood.

    Called as (q, k, v, kernel_size, dilation, rpb, scale) with q, k, v: (B, H, W, heads, d), kernel_size and
    dilation (kh, kw) tuples, rpb None or (heads, 2kh-1, 2kw-1), scale a float. Returns (B, H, W, heads, d).""",
)


# --- index math shared by every backend ------------------------------------------------------------------
@shape_cache(maxsize=256)
def _axis_neighbors(length: int, kernel: int, dilation: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(L, k) key positions and (L, k) rpb indices (0 .. 2k-2) of every query position along one axis."""
    i = torch.arange(length)
    group = i % dilation
    n = i // dilation
    group_len = (length - group + dilation - 1) // dilation
    start = torch.minimum((n - kernel // 2).clamp(min=0), group_len - kernel)
    steps = start[:, None] + torch.arange(kernel)  # L, k (in group steps)
    return group[:, None] + steps * dilation, steps - n[:, None] + kernel - 1


def _check(q: torch.Tensor, kernel_size: Tuple[int, int], dilation: Tuple[int, int], rpb: Optional[torch.Tensor]):
    if q.ndim != 5:
        raise ValueError(f'neighborhood attention expects (B, H, W, heads, d) tensors, got shape {tuple(q.shape)}')
    for size, k, d, axis in zip(q.shape[1:3], kernel_size, dilation, 'HW'):
        if k < 1 or d < 1:
            raise ValueError(f'kernel size and dilation must be positive, got kernel {k}, dilation {d}')
        if size < k * d:
            raise ValueError(f'neighborhood attention needs {axis} >= kernel_size * dilation = {k} * {d}, got {size} '
                             f'(pad the map or clip the dilation, as NeighborhoodAttention2D does)')
    if rpb is not None:
        want = (q.shape[3], 2 * kernel_size[0] - 1, 2 * kernel_size[1] - 1)
        if tuple(rpb.shape) != want:
            raise ValueError(f'rpb must have shape (heads, 2kh-1, 2kw-1) = {want}, got {tuple(rpb.shape)}')


def _scale(q: torch.Tensor, scale: Optional[float]) -> float:
    return q.shape[-1] ** -0.5 if scale is None else scale


# --- reference ------------------------------------------------------------------------------------------
@neighborhood_attention.register('reference', priority=0)
def _na_reference(q, k, v, kernel_size, dilation, rpb=None, scale=None):
    B, H, W, heads, d = q.shape
    (kh, kw), (dh, dw) = kernel_size, dilation
    rows, rpb_rows = (t.to(q.device) for t in _axis_neighbors(H, kh, dh))  # H, kh
    cols, rpb_cols = (t.to(q.device) for t in _axis_neighbors(W, kw, dw))  # W, kw
    r, c = rows[:, None, :, None], cols[None, :, None, :]  # H, W, kh, kw
    keys, values = k[:, r, c], v[:, r, c]  # B, H, W, kh, kw, heads, d
    attn = torch.einsum('bxyhd,bxyijhd->bxyhij', q * _scale(q, scale), keys)
    if rpb is not None:
        attn = attn + rpb[:, rpb_rows[:, None, :, None], rpb_cols[None, :, None, :]].permute(1, 2, 0, 3, 4)
    attn = attn.flatten(-2).softmax(-1).view_as(attn)
    return torch.einsum('bxyhij,bxyijhd->bxyhd', attn, values)


# --- cpu / generic: tiled dense attention over neighbourhood-union rectangles ------------------------------
def _tile_size(kernel_size, group_size) -> Tuple[int, int]:
    """Query tile (rows, cols). Keys per query are (rows + kh - 1)(cols + kw - 1) against kh * kw needed, so smaller
    tiles waste less, but SDPA wants >= 32 queries per tile. Measured (2 threads, 56x56 map, kernel 7): (4, 8)
    runs within ~3x of window attention with the same FLOPs, (7, 7) ~3.2x, (8, 8) ~3.3x, (4, 4) ~3.1x."""
    rows = max(2, (kernel_size[0] + 1) // 2)
    cols = max(kernel_size[1] + 1, -(-32 // rows))
    return min(rows, group_size[0]), min(cols, group_size[1])


@shape_cache(maxsize=128)
def _axis_plan(length: int, kernel: int, dilation: int, tile: int):
    """Tiling of one axis: every dilation group is cut into tiles of `tile` queries (groups padded to the longest).

    The union of the neighbourhoods of a tile's queries is a run of `rect` <= tile + kernel - 1 group positions
    (windows shift inward at the borders, so it never leaves the group). Returns
      q_pos (A, tile), k_pos (A, rect): map positions of each axis-tile's query slots / key run, A = d * tiles
        (slots past the group's end point at position 0; their queries are dropped, their keys masked out);
      slot (length,): the (axis-tile * tile + i) slot of every map position;
      inverse (A,), valid (u, tile, rect) bool, rpb_index (u, tile, rect): the u distinct (query, key) patterns
        (interior tiles share one) and the pattern of every axis-tile.
    """
    glen = -(-length // dilation)
    num_tiles = -(-glen // tile)
    rect = min(tile + kernel - 1, glen)
    g = torch.arange(dilation)[:, None, None]
    true_len = (length - g + dilation - 1) // dilation  # d, 1, 1
    n = torch.arange(num_tiles)[:, None] * tile + torch.arange(tile)  # tiles, tile: query group positions
    rect_start = (torch.arange(num_tiles) * tile - kernel // 2).clamp(min=0).clamp(max=glen - rect)
    m = rect_start[:, None] + torch.arange(rect)  # tiles, rect: key group positions
    start = torch.minimum((n - kernel // 2).clamp(min=0), true_len - kernel)  # d, tiles, tile
    rel = m[None, :, None, :] - start[..., None]  # d, tiles, tile, rect
    valid = (rel >= 0) & (rel < kernel) & (m[None, :, None, :] < true_len[..., None])
    # clamped only for the padding query slots past a group's end (their outputs are dropped)
    rpb_index = torch.where(valid, m[None, :, None, :] - n[None, :, :, None] + kernel - 1, torch.zeros_like(rel))
    rpb_index = rpb_index.clamp(0, 2 * kernel - 2)

    def to_map(pos, limit):  # group positions -> map positions, 0 where past the group's end
        return torch.where(pos < limit, g + pos * dilation, torch.zeros_like(pos)).flatten(0, 1)

    q_pos = to_map(n[None].expand(dilation, -1, -1), true_len)
    k_pos = to_map(m[None].expand(dilation, -1, -1), true_len)
    i = torch.arange(length)
    slot = ((i % dilation) * num_tiles + (i // dilation) // tile) * tile + (i // dilation) % tile
    code = torch.cat([valid.long(), rpb_index], -1).flatten(2).flatten(0, 1)  # A, 2 * tile * rect
    uniq, inverse = torch.unique(code, dim=0, return_inverse=True)
    uniq = uniq.view(-1, tile, 2 * rect)
    return q_pos, k_pos, slot, inverse, uniq[..., :rect].bool(), uniq[..., rect:]


@shape_cache(maxsize=128, constant_under_export=True)  # _axis_plan's torch.unique: data-dependent sizes
def _plan(H: int, W: int, kernel_size, dilation, tile, device):
    """The 2-D tiling as flat (H * W) indexes: queries (T * th * tw,), keys (T * rh * rw,), and output slots (H * W,)
    for T = Ah * Aw tiles, plus each axis' pattern tables for the mask."""
    ph = [t.to(device) for t in _axis_plan(H, kernel_size[0], dilation[0], tile[0])]
    pw = [t.to(device) for t in _axis_plan(W, kernel_size[1], dilation[1], tile[1])]
    (qh, kh, sh), (qw, kw, sw) = ph[:3], pw[:3]
    q_index = (qh[:, None, :, None] * W + qw[None, :, None, :]).flatten()
    k_index = (kh[:, None, :, None] * W + kw[None, :, None, :]).flatten()
    th, tw = tile
    ah_slot, ih = sh // th, sh % th
    aw_slot, iw = sw // tw, sw % tw
    out_index = (((ah_slot[:, None] * qw.shape[0] + aw_slot) * th + ih[:, None]) * tw + iw).flatten()
    return q_index, k_index, out_index, ph[3:], pw[3:]


def _tile_mask(rpb, dtype, device, axis_h, axis_w):
    """(Ah * Aw, heads or 1, th * tw, rh * rw) additive mask: -inf outside each query's neighbourhood, rpb inside.
    Built for the few distinct tile patterns, then expanded to every tile by one gather."""
    inv_h, valid_h, rpb_h = axis_h
    inv_w, valid_w, rpb_w = axis_w
    uh, th, rh = valid_h.shape
    uw, tw, rw = valid_w.shape
    valid = valid_h.view(uh, 1, th, 1, rh, 1) & valid_w.view(1, uw, 1, tw, 1, rw)  # uh, uw, th, tw, rh, rw
    if rpb is not None:
        mask = rpb[:, rpb_h.view(uh, 1, th, 1, rh, 1), rpb_w.view(1, uw, 1, tw, 1, rw)]  # heads, uh, uw, ...
        mask = mask.masked_fill(~valid, float('-inf')).to(dtype)
    else:
        mask = torch.zeros(valid.shape, dtype=dtype, device=device).masked_fill_(~valid, float('-inf'))[None]
    mask = mask.reshape(mask.shape[0], uh, uw, th * tw, rh * rw)
    return mask[:, inv_h[:, None], inv_w[None, :]].flatten(1, 2).transpose(0, 1)


# Bytes of key rectangles gathered per SDPA call. Small enough to stay in cache and below glibc's mmap threshold
# (each larger temporary is a fresh mmap, page-faulted on first touch: that alone doubled the time at batch 8).
_CHUNK_BYTES = 4 * 2 ** 20


def _na_tiled(q, k, v, kernel_size, dilation, rpb=None, scale=None, tile=None):
    """Each tile's queries attend the key rectangle around them by SDPA; a mask keeps every query to its own
    neighbourhood. Images (or, for big maps, runs of tiles) go through in cache-sized chunks."""
    B, H, W, heads, d = q.shape
    scale = _scale(q, scale)
    tile = tile or _tile_size(kernel_size, (-(-H // dilation[0]), -(-W // dilation[1])))
    q_index, k_index, out_index, axis_h, axis_w = _plan(H, W, tuple(kernel_size), tuple(dilation), tuple(tile),
                                                       q.device)
    mask = _tile_mask(rpb, q.dtype, q.device, axis_h, axis_w)  # tiles, heads or 1, L, S
    tiles, _, L, S = mask.shape
    q_index, k_index = q_index.view(tiles, L), k_index.view(tiles, S)
    q, k, v = (x.reshape(B, H * W, heads, d) for x in (q, k, v))
    out = q.new_empty(B, tiles, L, heads, d)

    # chunks of (images, tiles, their mask); whole images share one (images * tiles)-row mask, built once
    tile_bytes = heads * S * d * q.element_size()
    images = 0 if torch.compiler.is_compiling() else max(1, min(B, _CHUNK_BYTES // (tile_bytes * tiles)))
    if not images:  # compiling: one chunk, as a loop over (or a slice by) the batch would fix its size
        chunks = [(slice(None), slice(None), mask.expand(B, -1, -1, -1, -1).reshape(B * tiles, -1, L, S))]
    elif images > 1:
        whole = mask.expand(images, -1, -1, -1, -1).reshape(images * tiles, -1, L, S)
        chunks = [(slice(b, b + images), slice(None), whole[:min(images, B - b) * tiles]) for b in range(0, B, images)]
    else:  # big maps: runs of tiles of one image
        step = max(1, _CHUNK_BYTES // tile_bytes)
        chunks = [(slice(b, b + 1), slice(t, t + step), mask[t:t + step])
                  for b in range(B) for t in range(0, tiles, step)]
    for bs, ts, chunk_mask in chunks:
        qi, ki = q_index[ts], k_index[ts]

        def gather(x, index):  # (b, H * W, heads, d) -> (b * n, heads, len, d), a view of the gathered rows
            rows = x[bs].index_select(1, index.flatten())  # SDPA reads the strided heads: no second copy
            return rows.view(-1, index.shape[1], heads, d).transpose(1, 2)

        o = F.scaled_dot_product_attention(gather(q, qi), gather(k, ki), gather(v, ki), attn_mask=chunk_mask,
                                           scale=scale)
        out[bs, ts] = o.transpose(1, 2).view(-1, len(qi), L, heads, d)
    return out.view(B, tiles * L, heads, d).index_select(1, out_index).view(B, H, W, heads, d)


@neighborhood_attention.register('cpu', priority=10)
def _na_cpu(q, k, v, kernel_size, dilation, rpb=None, scale=None):
    return _na_tiled(q, k, v, kernel_size, dilation, rpb, scale)


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
    flex_attention materializes the HW x HW scores). Kernel sizes are the only Python constants the mods close over
    (one compile per kernel size); map sizes and dilations live in tensors, so new maps only change shapes.
    CPU (forward only, for tests): static shapes, one compile per map size (past dynamo's recompile limit flex runs
    eagerly, with torch's warning), because with dynamic shapes inductor's CPU flex template (torch 2.14.1) emits
    C++ that does not compile (`cur_qSplitSize2` undeclared) for the tables the mods index."""
    return torch.compile(_flex_module().flex_attention, dynamic=False if device_type == 'cpu' else None)


@shape_cache(maxsize=64)
def _flex_plan(H: int, W: int, kernel_size, dilation, device):
    """Token order, flat tables and the BlockMask of the neighbourhood pattern on the flattened (H * W) map.

    Order: dilation-group-major (all of group (0, 0) in raster order, then group (0, 1), ...), so that the 128-token
    blocks of a dilated map hold whole groups and attend few key blocks (kernel 7: 73 instead of 409 of the 625
    score blocks at 56x56 dilation 8, 19 instead of 49 at 28x28 dilation 4); `perm` (None when undilated: raster
    order) lists the map position of each slot, `inverse` the slot of each map position.
    Tables, one int per slot: `group` (the (y % dh, x % dw) dilation group as one id), `ny`, `nx` (position inside
    the group, in group steps) and `sy`, `sx` (first key row / column of the slot's window, in group steps; windows
    shift inward at the borders). Key m is in query n's neighbourhood iff it is in the same group and
    sy[n] <= ny[m] < sy[n] + kh, sx[n] <= nx[m] < sx[n] + kw."""
    (kh, kw), (dh, dw) = kernel_size, dilation

    def axis(length, k, d):
        i = torch.arange(length)
        g, n = i % d, i // d
        start = torch.minimum((n - k // 2).clamp(min=0), (length - g + d - 1) // d - k)
        return g, n, start

    gy, ny, sy = (t[:, None].expand(H, W).reshape(-1) for t in axis(H, kh, dh))
    gx, nx, sx = (t[None, :].expand(H, W).reshape(-1) for t in axis(W, kw, dw))
    group = gy * dw + gx
    perm = inverse = None
    if (dh, dw) != (1, 1):
        perm = torch.argsort(group * (H * W) + ny * W + nx)
        inverse = torch.argsort(perm).to(device)
        group, ny, nx, sy, sx = (t[perm] for t in (group, ny, nx, sy, sx))
        perm = perm.to(device)
    tables = [t.to(device=device, dtype=torch.int32) for t in (group, ny, nx, sy, sx)]
    mask_mod = _flex_mask_mod(kh, kw, *tables)
    create = _flex_module().create_block_mask
    if device.type == 'cuda' and (H * W) ** 2 > 2 ** 24:
        create = torch.compile(create)  # eager create_block_mask materializes the (HW)^2 mask (and int temporaries)
    return tables, create(mask_mod, None, None, H * W, H * W, device=device), perm, inverse


def _flex_mask_mod(kh: int, kw: int, group, ny, nx, sy, sx):
    def mask_mod(b, h, q_idx, kv_idx):
        y, x = ny[kv_idx], nx[kv_idx]
        y0, x0 = sy[q_idx], sx[q_idx]
        return (group[q_idx] == group[kv_idx]) & (y >= y0) & (y < y0 + kh) & (x >= x0) & (x < x0 + kw)
    return mask_mod


def _flex_rpb_score_mod(rpb: torch.Tensor, ny, nx):
    """score + rpb[h, dy + kh - 1, dx + kw - 1], (dy, dx) the key's offset from the query in group steps. The
    indices are clamped only for masked-out pairs (flex evaluates the score_mod on whole blocks)."""
    rows, cols = rpb.shape[-2:]

    def score_mod(score, b, h, q_idx, kv_idx):
        iy = (ny[kv_idx] - ny[q_idx] + (rows // 2)).clamp(0, rows - 1)
        ix = (nx[kv_idx] - nx[q_idx] + (cols // 2)).clamp(0, cols - 1)
        return score + rpb[h, iy, ix].to(score.dtype)
    return score_mod


def _flex_runs(q, k, v, kernel_size, dilation, rpb=None, scale=None) -> bool:
    return _flex_module() is not None


def _flex_supports(q, k, v, kernel_size, dilation, rpb=None, scale=None) -> bool:
    """Chosen for CUDA tensors only (on CPU eager flex materializes the scores and has no backward), in the dtypes
    and head sizes its Triton kernels take (head dim >= 16; smaller heads take the tiled path)."""
    return (q.is_cuda and q.dtype in (torch.float32, torch.float16, torch.bfloat16) and q.shape[-1] >= 16
            and _flex_module() is not None)


@neighborhood_attention.register('flex', priority=15, supports=_flex_supports, runs=_flex_runs)
def _na_flex(q, k, v, kernel_size, dilation, rpb=None, scale=None):
    """flex_attention on the (B, heads, H * W, d) flattened map (group-major when dilated): the BlockMask skips key
    blocks outside every neighbourhood, the mask_mod keeps each query to its own k x k neighbours, the score_mod
    adds the rpb. Compiled (fused kernel, differentiable incl. rpb) on CUDA; eager elsewhere (materializes the
    scores; torch has no flex backward on CPU), for testing only: 'flex' is chosen automatically for CUDA tensors.
    On CPU without autograd the compiled kernel runs too (torch >= 2.14 compiles flex's forward for CPU, BlockMask
    sparsity and score_mod included), so the CUDA path's mask and score_mod are testable without a GPU."""
    B, H, W, heads, d = q.shape
    tables, block_mask, perm, inverse = _flex_plan(H, W, tuple(kernel_size), tuple(dilation), q.device)
    score_mod = None if rpb is None else _flex_rpb_score_mod(rpb, tables[1], tables[2])
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, rpb))
    flex = _flex_compiled(q.device.type) if q.is_cuda or not needs_grad else _flex_module().flex_attention

    def tokens(x):  # (B, H, W, heads, d) -> (B, heads, H * W, d), group-major when dilated
        x = x.reshape(B, H * W, heads, d)
        return (x if perm is None else x.index_select(1, perm)).transpose(1, 2)

    out = flex(tokens(q), tokens(k), tokens(v), score_mod=score_mod, block_mask=block_mask, scale=_scale(q, scale))
    out = out.transpose(1, 2)
    return (out if inverse is None else out.index_select(1, inverse)).reshape(B, H, W, heads, d)


# --- NATTEN (fused kernels, CUDA, no rpb) -------------------------------------------------------------------
_NATTEN_MIN = (0, 20)


@functools.lru_cache(maxsize=1)
def _natten():
    """The `natten` module when it imports and is new enough (>= 0.20, heads-last `na2d`), else None.

    One warning on failure; the other backends cover every call, so NATTEN is never required."""
    try:
        import natten
        version = tuple(int(p) for p in natten.__version__.split('+')[0].split('.')[:2])
        if version < _NATTEN_MIN:
            raise ImportError(f'natten {natten.__version__} is older than {".".join(map(str, _NATTEN_MIN))}')
        natten.na2d  # noqa: B018  (the API this adapter uses)
        return natten
    except Exception as e:  # ImportError, or a binary built for another torch
        if not isinstance(e, ModuleNotFoundError):
            warnings.warn(f'zoo: NATTEN is installed but unusable ({e}); neighborhood attention uses the zoo '
                          f'backends', RuntimeWarning)
        return None


def natten_available() -> bool:
    return _natten() is not None


@neighborhood_attention.register(
    'natten', priority=20,
    supports=lambda q, k, v, kernel_size, dilation, rpb=None, scale=None: (
        q.is_cuda and rpb is None and natten_available()))
def _na_natten(q, k, v, kernel_size, dilation, rpb=None, scale=None):
    return _natten().na2d(q, k, v, kernel_size=tuple(kernel_size), dilation=tuple(dilation), scale=_scale(q, scale))


# --- functional API -----------------------------------------------------------------------------------------
def na2d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: IntOr2, dilation: IntOr2 = 1,
         rpb: Optional[torch.Tensor] = None, scale: Optional[float] = None) -> torch.Tensor:
    """2-D neighborhood attention on (B, H, W, heads, d) tensors; see the module docstring for the semantics."""
    kernel_size, dilation = to_2tuple(kernel_size), to_2tuple(dilation)
    _check(q, kernel_size, dilation, rpb)
    scale = _scale(q, scale)
    if torch.jit.is_tracing():
        # FLOP counting (fvcore traces the model): the reference backend's two einsums are exactly the MACs the
        # NAT/DiNAT papers (NATTEN's counter) report, q.k and attn.v over each query's neighbourhood; the cpu
        # path's tiles would be counted with their masked-out keys.
        return neighborhood_attention(q, k, v, kernel_size, dilation, rpb, scale, backend='reference')
    return neighborhood_attention(q, k, v, kernel_size, dilation, rpb, scale)


def na1d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int, dilation: int = 1,
         rpb: Optional[torch.Tensor] = None, scale: Optional[float] = None) -> torch.Tensor:
    """1-D neighborhood attention on (B, L, heads, d) tensors; rpb (heads, 2k - 1). The 2-D op with a k x 1 kernel."""
    out = na2d(q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2), (kernel_size, 1), (dilation, 1),
               None if rpb is None else rpb.unsqueeze(-1), scale)
    return out.squeeze(2)


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
        q, k, v = self.qkv(x).view(B, Hp, Wp, 3, self.num_heads, self.head_dim).unbind(3)
        x = na2d(q, k, v, self.kernel_size, dilation, rpb=self.rpb, scale=self.scale).reshape(B, Hp, Wp, -1)
        if (Hp, Wp) != (H, W):
            x = x[:, :H, :W]
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return (f'num_heads={self.num_heads}, kernel_size={self.kernel_size}, dilation={self.dilation}, '
                f'rel_pos_bias={self.rpb is not None}, small_map={self.small_map!r}')
