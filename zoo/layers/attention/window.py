"""(Shifted) window attention with a relative position bias, and the windowing every windowed mixer shares.

Two partitions of a map into groups of wh x ww tokens: `window` (contiguous blocks, Swin / MaxViT block
attention) and `grid` (a wh x ww grid of tokens spread evenly over the map with stride H/wh, MaxViT grid
attention). Both pad, mask and crop the same way.

Maps are channels-last (B, H, W, C). Any H, W works: the map is padded to a window multiple inside the
mixer, padded tokens are masked out as keys, and the output is cropped back, so results do not depend
on how much padding a size needs.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import resize_rel_pos_bias_table, to_2tuple, trunc_normal_

from .dense import dense_attention, native_is_fast
from .. import _native
from ..mlp import inference_linear, map_linear
from .._cache import capturing_graph, eager_inference, shape_cache

__all__ = [
    'window_partition', 'window_reverse', 'grid_partition', 'grid_reverse', 'PARTITIONS',
    'relative_position_index', 'RelativePositionBias', 'window_mask', 'window_order', 'clamp_window', 'WindowMixer',
    'WindowAttention', 'GridAttention',
]

Size2 = Tuple[int, int]


def window_partition(x: torch.Tensor, window_size: Size2) -> torch.Tensor:
    """(B, H, W, C) -> (B, num_windows, wh * ww, C); H and W must be window multiples."""
    B, H, W, C = x.shape
    wh, ww = window_size
    x = x.view(B, H // wh, wh, W // ww, ww, C).transpose(2, 3)
    return x.reshape(B, (H // wh) * (W // ww), wh * ww, C)


def window_reverse(windows: torch.Tensor, window_size: Size2, H: int, W: int) -> torch.Tensor:
    """(B, num_windows, wh * ww, C) -> (B, H, W, C), the inverse of window_partition."""
    B, _, _, C = windows.shape
    wh, ww = window_size
    x = windows.view(B, H // wh, W // ww, wh, ww, C).transpose(2, 3)
    return x.reshape(B, H, W, C)


def grid_partition(x: torch.Tensor, grid_size: Size2) -> torch.Tensor:
    """(B, H, W, C) -> (B, num_windows, gh * gw, C): window (i, j) holds the tokens (a * H/gh + i, b * W/gw + j)
    for a < gh, b < gw (a dilated gh x gw grid); H and W must be grid multiples."""
    B, H, W, C = x.shape
    gh, gw = grid_size
    x = x.view(B, gh, H // gh, gw, W // gw, C).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // gh) * (W // gw), gh * gw, C)


def grid_reverse(windows: torch.Tensor, grid_size: Size2, H: int, W: int) -> torch.Tensor:
    """(B, num_windows, gh * gw, C) -> (B, H, W, C), the inverse of grid_partition."""
    B, _, _, C = windows.shape
    gh, gw = grid_size
    x = windows.view(B, H // gh, W // gw, gh, gw, C).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(B, H, W, C)


# partition name -> (partition, reverse)
PARTITIONS = {'window': (window_partition, window_reverse), 'grid': (grid_partition, grid_reverse)}


def relative_position_index(wh: int, ww: int) -> torch.Tensor:
    """(N, N) index into a ((2wh-1) * (2ww-1))-row bias table for the token pairs of a wh x ww window."""
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing='ij')).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # 2, N, N
    return (rel[0] + wh - 1) * (2 * ww - 1) + (rel[1] + ww - 1)


class RelativePositionBias(nn.Module):
    """Learned bias per head for each relative offset inside a window (Swin style).

    The index is a non-persistent buffer (never in a checkpoint); the table is resampled bicubically
    when the window size changes, by `set_window_size` or by a checkpoint filter.
    """

    def __init__(self, window_size: Size2, num_heads: int):
        super().__init__()
        self.window_size = to_2tuple(window_size)
        self.num_heads = num_heads
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        trunc_normal_(self.relative_position_bias_table, std=.02)
        self.register_buffer('index', relative_position_index(wh, ww), persistent=False)

    def forward(self) -> torch.Tensor:
        """(heads, N, N) bias for the current window."""
        n = self.index.shape[0]
        # contiguous: fused SDPA kernels fall back to the slow math path for a strided mask
        return self.relative_position_bias_table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()

    def set_window_size(self, window_size: Size2) -> None:
        window_size = to_2tuple(window_size)
        if window_size == self.window_size:
            return
        wh, ww = window_size
        with torch.no_grad():
            table = resize_rel_pos_bias_table(
                self.relative_position_bias_table, new_window_size=window_size,
                new_bias_shape=((2 * wh - 1) * (2 * ww - 1), self.num_heads), old_window_size=self.window_size)
        self.relative_position_bias_table = nn.Parameter(table, requires_grad=self.relative_position_bias_table.requires_grad)
        self.register_buffer('index', relative_position_index(wh, ww).to(table.device), persistent=False)
        self.window_size = window_size


def clamp_window(feat_size: Size2, window_size: Size2, shift_size: Size2) -> Tuple[Size2, Size2]:
    """Window and shift for a map of `feat_size`: a side no larger than its window is one window, unshifted.

    This is how Swin sets windows for the resolution a model is built for (and matches timm)."""
    window = tuple(min(f, w) for f, w in zip(feat_size, window_size))
    shift = tuple(0 if f <= w else s for f, w, s in zip(feat_size, window, shift_size))
    return window, shift


@shape_cache(maxsize=64)
def _window_mask(H: int, W: int, window_size: Size2, shift_size: Size2, partition: str = 'window',
                 device=None) -> Optional[torch.Tensor]:
    wh, ww = window_size
    sh, sw = shift_size
    Hp, Wp = -(-H // wh) * wh, -(-W // ww) * ww
    if not (sh or sw) and (Hp, Wp) == (H, W):
        return None
    # region label of every token in the rolled frame: Swin's 3x3 shift regions (bands n - w and n - s along each
    # shifted side), and padding (at the bottom/right before the roll: rolled position p was p + s) as a region
    # of its own. Arithmetic on aranges, so a traced graph holds a few fused pointwise ops, not a loop of writes,
    # made on the model's device (not built on the CPU and copied over on every call of a compiled CUDA model).
    def axis(n, w, s, valid):
        """(band, padded) of each position along one side of the rolled frame."""
        pos = torch.arange(n, device=device)
        band = (pos >= n - w).long() + (pos >= n - s).long() if s else torch.zeros_like(pos)
        return band, (pos + s) % n >= valid

    band_h, pad_h = axis(Hp, wh, sh, H)
    band_w, pad_w = axis(Wp, ww, sw, W)
    label = 3 * band_h[:, None] + band_w + 9 * (pad_h[:, None] | pad_w).long()
    windows = PARTITIONS[partition][0](label.view(1, Hp, Wp, 1), window_size)[0, :, :, 0]  # nW, N
    mask = windows[:, None, :] != windows[:, :, None]
    # -inf (a query always sees itself, so no row is all masked): the released models' -100 leaves weights of
    # e^-100, subnormal floats that slow every matmul they reach on x86 by 10-100x (padded small maps: 5x)
    return torch.zeros(mask.shape, device=device).masked_fill_(mask, float('-inf'))


def window_mask(H: int, W: int, window_size: Size2, shift_size: Size2, device=None, dtype=None,
                partition: str = 'window'):
    """(num_windows, N, N) additive mask for a shifted and/or padded H x W map, or None when not needed."""
    mask = _window_mask(H, W, tuple(window_size), tuple(shift_size), partition, device)
    return None if mask is None else mask.to(dtype=dtype)


@shape_cache(maxsize=128)
def window_order(Hp: int, Wp: int, window_size: Size2, shift_size: Size2, partition: str = 'window',
                 device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Flat token indices that roll an Hp x Wp map by -shift and partition it ((B, Hp*Wp, C) rows in window
    order), and the inverse permutation that undoes both."""
    idx = torch.arange(Hp * Wp).view(1, Hp, Wp, 1)
    if any(shift_size):
        idx = torch.roll(idx, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))
    order = PARTITIONS[partition][0](idx, tuple(window_size)).flatten()
    return order.to(device), torch.argsort(order).to(device)


class WindowMixer(nn.Module):
    """Base for mixers applied inside (shifted) windows: pads, rolls, partitions, and undoes it all.

    Subclasses implement `mix(windows, mask)` on (B, num_windows, N, C) with an optional
    (num_windows, N, N) additive mask and return the same shape. `partition` is 'window' (contiguous
    windows, optionally shifted) or 'grid' (dilated grids, MaxViT; never shifted).
    """

    def __init__(self, window_size: Size2, shift_size: Size2 = (0, 0), partition: str = 'window'):
        super().__init__()
        if partition not in PARTITIONS:
            raise ValueError(f'partition must be one of {list(PARTITIONS)}, got {partition!r}')
        self.window_size = to_2tuple(window_size)
        self.shift_size = to_2tuple(shift_size)
        self.partition = partition
        if partition == 'grid' and any(self.shift_size):
            raise ValueError('grid partitions are not shifted')

    def set_window_size(self, window_size: Size2, shift_size: Size2) -> None:
        self.window_size = to_2tuple(window_size)
        self.shift_size = to_2tuple(shift_size)

    def mix(self, windows: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) zero-padded at the bottom/right to window multiples."""
        pad_h, pad_w = (-x.shape[1]) % self.window_size[0], (-x.shape[2]) % self.window_size[1]
        return F.pad(x, (0, 0, 0, pad_w, 0, pad_h)) if pad_h or pad_w else x

    @staticmethod
    def _crop(x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        return x if x.shape[1:3] == (H, W) else x[:, :H, :W].contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = self._pad(x)
        Hp, Wp = x.shape[1:3]
        mask = window_mask(H, W, self.window_size, self.shift_size, device=x.device, dtype=x.dtype,
                           partition=self.partition)
        if capturing_graph():
            # roll and views: affine indexing that inductor fuses into the neighbouring kernels, where the gather
            # below would trace the building of its index (an argsort per block per call) and load through it
            partition, reverse = PARTITIONS[self.partition]
            (sh, sw), shifted = self.shift_size, any(self.shift_size)
            windows = partition(torch.roll(x, (-sh, -sw), (1, 2)) if shifted else x, self.window_size)
            x = reverse(self.mix(windows, mask), self.window_size, Hp, Wp)
            return self._crop(torch.roll(x, (sh, sw), (1, 2)) if shifted else x, H, W)
        # roll + partition (and reverse + roll back) as one row gather each: a single copy instead of two
        order, inverse = window_order(Hp, Wp, self.window_size, self.shift_size, self.partition, x.device)
        N = self.window_size[0] * self.window_size[1]
        windows = x.reshape(B, Hp * Wp, C).index_select(1, order).view(B, -1, N, C)
        out = self.mix(windows, mask)
        x = out.reshape(B, Hp * Wp, -1).index_select(1, inverse).view(B, Hp, Wp, -1)
        return self._crop(x, H, W)

    def extra_repr(self) -> str:
        return f'partition={self.partition}, window_size={self.window_size}, shift_size={self.shift_size}'


class WindowAttention(WindowMixer):
    """W-MSA / SW-MSA: multi-head self-attention inside windows with a relative position bias.

    `rel_pos_bias=False` drops the bias (DaViT's spatial attention); `partition='grid'` attends within
    dilated grids instead of windows (MaxViT's grid attention, see GridAttention)."""

    def __init__(self, dim: int, num_heads: int, window_size: Size2 = (7, 7), shift_size: Size2 = (0, 0),
                 qkv_bias: bool = True, head_dim: Optional[int] = None, attn_drop: float = 0.,
                 proj_drop: float = 0., rel_pos_bias: bool = True, partition: str = 'window'):
        super().__init__(window_size, shift_size, partition)
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        attn_dim = self.head_dim * num_heads
        self.qkv = nn.Linear(dim, attn_dim * 3, bias=qkv_bias)
        self.rel_pos = RelativePositionBias(self.window_size, num_heads) if rel_pos_bias else None
        self.attn_drop = attn_drop
        self.proj = nn.Linear(attn_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def set_window_size(self, window_size: Size2, shift_size: Size2) -> None:
        super().set_window_size(window_size, shift_size)
        if self.rel_pos is not None:
            self.rel_pos.set_window_size(self.window_size)

    def _native_runs(self, x: torch.Tensor) -> bool:
        """Whether this call takes the native kernel: CPU float32 eager inference, unless another dense-attention
        backend is forced (force_backend / ZOO_ATTN_BACKEND), with the window sizes and head dims the kernel
        is fast for (as the dense op's 'native' backend). Not under CPU autocast, whose qkv projection would be
        bfloat16 where the kernel reads float32."""
        N = self.window_size[0] * self.window_size[1]
        return (eager_inference(self) and x.device.type == 'cpu' and x.dtype == torch.float32
                and not torch.is_autocast_enabled('cpu') and dense_attention.forced() in (None, 'native')
                and self.head_dim in range(8, 65, 8) and native_is_fast(N, N) and _native.library() is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """With the native kernel, qkv is projected on the map in raster order and the kernel reads each window's
        tokens through the window index and writes each output token back in place: no partitioned copies
        (both gathers of WindowMixer.forward), no per-window bias + mask sum, and the qkv bias is added as the
        kernel reads q/k/v instead of being broadcast into the GEMM's output first."""
        if not self._native_runs(x):
            return super().forward(x)
        B, H, W, C = x.shape
        x = self._pad(x)
        Hp, Wp = x.shape[1:3]
        N = self.window_size[0] * self.window_size[1]
        mask = window_mask(H, W, self.window_size, self.shift_size, device=x.device, dtype=x.dtype,
                           partition=self.partition)
        order, _ = window_order(Hp, Wp, self.window_size, self.shift_size, self.partition, x.device)
        qkv = inference_linear(x.reshape(B, Hp * Wp, C), self.qkv.weight)  # its bias is added by the kernel
        assert qkv.dtype == torch.float32, 'the native window kernel reads float32 (_native_runs let another through)'
        qkv_bias = None if self.qkv.bias is None else self.qkv.bias.data_ptr()
        bias = self.rel_pos() if self.rel_pos is not None else None
        out = qkv.new_empty(B, Hp * Wp, self.num_heads * self.head_dim)
        status = _native.library().zoo_window_attention_f32(
            qkv.data_ptr(), qkv_bias, B, Hp * Wp, self.num_heads, self.head_dim, order.data_ptr(),
            order.numel() // N, N, None if bias is None else bias.data_ptr(),
            None if mask is None else mask.data_ptr(), out.data_ptr(), self.head_dim ** -0.5, torch.get_num_threads())
        assert status == 0, 'zoo_window_attention_f32 refused a shape _native_runs accepted'
        return self._crop(map_linear(self.proj, out).view(B, Hp, Wp, -1), H, W)

    def mix(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        B, nW, N, _ = x.shape
        q, k, v = map_linear(self.qkv, x).view(B, nW, N, 3, self.num_heads, self.head_dim).permute(3, 0, 1, 4, 2, 5)
        bias = self.rel_pos() if self.rel_pos is not None else None  # heads, N, N
        if mask is not None:
            mask = mask.unsqueeze(1)  # nW, 1, N, N
            bias = mask if bias is None else bias + mask  # nW, heads, N, N
        x = dense_attention(q, k, v, bias=bias, dropout_p=self.attn_drop if self.training else 0.)
        return self.proj_drop(map_linear(self.proj, x.transpose(2, 3).reshape(B, nW, N, -1)))


class GridAttention(WindowAttention):
    """MaxViT grid attention: multi-head self-attention among the tokens of a gh x gw grid dilated over the
    whole map (sparse global mixing), with a relative position bias over grid offsets."""

    def __init__(self, dim: int, num_heads: int, grid_size: Size2 = (7, 7), **kwargs):
        kwargs.pop('shift_size', None)
        super().__init__(dim, num_heads, window_size=grid_size, partition='grid', **kwargs)
