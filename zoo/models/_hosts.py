"""What the channels-last hierarchical hosts (Swin, PVT, CSWin, NAT) share: the pre-norm block around a token
mixer, the stage map sizes and widths, and the constructor's common start and end.

A host takes its token mixer as an argument (Agent-Swin = the Swin host with the agent mixer, InLine-PVT = the PVT
host with the InLine mixer, ...), so these pieces serve every host x mixer pair once.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import DropPath, to_2tuple

from ..layers import Mlp, WindowAttention, clamp_window
from ..layers.init import trunc_normal_init_
from ..layers.residual import residual
from ._base import Backbone, Stage

__all__ = ['MapBlock', 'MapHost', 'MixerHost', 'block_args', 'init_linears_', 'stage_sizes', 'stage_widths']

# the hosts' init (Swin's, and the authors' of PVT, DeiT, NAT, CSWin): truncated-normal(.02) Linear weights, zero
# biases; convs and norms keep torch's defaults
init_linears_ = partial(trunc_normal_init_, convs=False)


def stage_sizes(img_size: Tuple[int, int], stride: int, num_stages: int) -> List[Tuple[int, int]]:
    """Each stage's map size: ceil(img / stride) at stage 1, halved (rounding up) at every later stage."""
    size = [math.ceil(s / stride) for s in img_size]
    sizes = []
    for _ in range(num_stages):
        sizes.append(tuple(size))
        size = [math.ceil(s / 2) for s in size]
    return sizes


def stage_widths(embed_dim: Union[int, Sequence[int]], num_stages: int) -> List[int]:
    """Per-stage widths: one int is stage 1's width, doubled at every later stage (Swin's C, 2C, 4C, 8C); a
    sequence gives each stage's width."""
    if isinstance(embed_dim, int):
        return [embed_dim * 2 ** i for i in range(num_stages)]
    if len(embed_dim) != num_stages:
        raise ValueError(f'embed_dim names {len(embed_dim)} stage widths {tuple(embed_dim)} for {num_stages} stages')
    return list(embed_dim)


def block_args(mixer_args: Sequence[Union[Dict[str, Any], Sequence[Dict[str, Any]]]], stage: int,
               block: int) -> Dict[str, Any]:
    """A copy of the mixer arguments of `block` in `stage`: mixer_args holds per stage one dict, or one per block."""
    args = mixer_args[stage]
    return dict(args[block] if isinstance(args, (list, tuple)) else args)


class MapBlock(nn.Module):
    """x + mixer(norm(x)), then x + mlp(norm(x)), on (B, H, W, C) maps.

    The mixer is built as mixer_layer(dim=, num_heads=, window_size=, shift_size=, qkv_bias=, attn_drop=, proj_drop=,
    **mixer_kwargs) with its window (and half-window shift, for `shifted` blocks) clamped to `feat_size`; a mixer
    with `reads_block_input` also gets the block's input before norm1 (InLine-CSWin predicts a kernel from its mean).
    """

    def __init__(self, dim: int, num_heads: int, window_size: Tuple[int, int], shifted: bool,
                 feat_size: Tuple[int, int], mixer_layer: Callable = WindowAttention, mlp_ratio: float = 4.,
                 qkv_bias: bool = True, proj_drop: float = 0., attn_drop: float = 0., drop_path: float = 0.,
                 norm_layer: Callable = nn.LayerNorm, **mixer_kwargs):
        super().__init__()
        self.target_window = to_2tuple(window_size)
        self.shifted = shifted
        window, shift = self._window_shift(feat_size)
        self.norm1 = norm_layer(dim)
        self.attn = mixer_layer(dim=dim, num_heads=num_heads, window_size=window, shift_size=shift,
                                qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop, **mixer_kwargs)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.reads_block_input = bool(getattr(self.attn, 'reads_block_input', False))

    def _window_shift(self, feat_size):
        shift = tuple(w // 2 for w in self.target_window) if self.shifted else (0, 0)
        return clamp_window(feat_size, self.target_window, shift)

    def set_input_size(self, feat_size: Tuple[int, int], window_size: Optional[Tuple[int, int]] = None):
        if window_size is not None:
            self.target_window = to_2tuple(window_size)
        self.attn.set_window_size(*self._window_shift(feat_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def mix(t):
            return self.attn(self.norm1(t), block_input=t) if self.reads_block_input else self.attn(self.norm1(t))

        x = residual(x, lambda t: self.drop_path1(mix(t)))
        return residual(x, lambda t: self.drop_path2(self.mlp(self.norm2(t))))


class MapHost(Backbone):
    """Base of the hierarchical hosts with (B, H, W, C) stage outputs and a stem of stride `patch_size`. NAT, whose
    block is its own, builds on it with Backbone's `_setup` / `_finish`; MixerHost is the whole constructor around a
    token mixer."""
    output_fmt = 'NHWC'
    patch_size: int = 4  # the stem's stride: stage i's map is img / (patch_size * 2^i)

    def _stage_sizes(self, img_size: Optional[Tuple[int, int]] = None,
                     num_stages: Optional[int] = None) -> List[Tuple[int, int]]:
        """The stage map sizes at `img_size` (default: the size the model is built for)."""
        return stage_sizes(img_size or self.img_size, self.patch_size, num_stages or len(self.stages))


class MixerHost(MapHost):
    """The hierarchical host around a token mixer: a stem, stages of `MapBlock`s (each stage after the first
    opening with a downsample), a final norm and a classifier head, all on (B, H, W, C) maps.

    A family (Swin, PVT, CSWin) is this host with its own `_stem`, `_downsample` and, where it places windows or
    adds mixer arguments, `_window` and `_mixer_kwargs`.
    """

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: Union[int, Sequence[int]] = 96,
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (3, 6, 12, 24),
            mlp_ratio: Union[float, Sequence[float]] = 4.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.1,
            norm_layer: Callable = nn.LayerNorm,
            final_norm: bool = True,
            mixer_layer: Optional[Callable] = WindowAttention,
            mixer_args: Optional[Sequence[Union[Dict[str, Any], Sequence[Dict[str, Any]]]]] = None,
    ):
        """
        Args:
            embed_dim: stage 1's width (doubled per stage) or one width per stage (`stage_widths`).
            mlp_ratio: one MLP ratio, or one per stage.
            final_norm: a norm after the last stage (else none: Agent-/InLine-PVT).
            mixer_layer: the token mixer, built by MapBlock (see there) with `_mixer_kwargs` and
                mixer_args[stage] (or [stage][block]); a dict there that names its own `mixer_layer` builds that
                mixer instead (hybrids: global agent / InLine attention in some blocks stay this host).
        """
        super().__init__()
        if mixer_layer is None:
            raise ValueError(f'{type(self).__name__} is a host: pass the token mixer as mixer_layer')
        num_stages = len(depths)
        dims = stage_widths(embed_dim, num_stages)
        mlp_ratios = [mlp_ratio] * num_stages if isinstance(mlp_ratio, (int, float)) else list(mlp_ratio)
        dpr = self._setup(in_chans, num_classes, dims, depths, drop_path_rate, self.patch_size, img_size)
        mixer_args = mixer_args or [{}] * num_stages
        feat_sizes = self._stage_sizes(num_stages=num_stages)

        self.stem = self._stem(in_chans, dims[0], feat_sizes[0], norm_layer, drop_rate)
        stages = []
        for i, feat_size in enumerate(feat_sizes):
            blocks = []
            for j in range(depths[i]):
                args = block_args(mixer_args, i, j)
                layer = args.pop('mixer_layer', None)
                window, shifted = self._window(i, j, feat_size, args.pop('window_size', None))
                if layer is None:
                    layer, args = mixer_layer, dict(self._mixer_kwargs(i), **args)
                blocks.append(MapBlock(
                    dims[i], num_heads[i], window, shifted=shifted, feat_size=feat_size, mixer_layer=layer,
                    mlp_ratio=mlp_ratios[i], qkv_bias=qkv_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate,
                    drop_path=dpr[i][j], norm_layer=norm_layer, **args))
            down = self._downsample(dims[i - 1], dims[i], feat_size, norm_layer, drop_rate) if i > 0 else None
            stages.append(Stage(blocks, down))
        self._finish(stages, norm_layer(self.num_features) if final_norm else nn.Identity(),
                     self._classifier_head(global_pool, drop_rate), init_linears_)

    # -- what a family defines ---------------------------------------------------------------------
    def _stem(self, in_chans: int, dim: int, feat_size: Tuple[int, int], norm_layer: Callable,
              drop_rate: float) -> nn.Module:
        raise NotImplementedError

    def _downsample(self, in_dim: int, out_dim: int, feat_size: Tuple[int, int], norm_layer: Callable,
                    drop_rate: float) -> nn.Module:
        raise NotImplementedError

    def _window(self, stage: int, block: int, feat_size: Tuple[int, int],
                window_size: Optional[Union[int, Tuple[int, int]]]) -> Tuple[Tuple[int, int], bool]:
        """The block's window (target, clamped to the map by MapBlock) and whether it is shifted; mixer_args may
        name a window_size. Default: the whole map, unshifted (global mixers, PVT, CSWin)."""
        return to_2tuple(window_size) if window_size is not None else feat_size, False

    def _mixer_kwargs(self, stage: int) -> Dict[str, Any]:
        """Arguments the host's own mixer_layer gets in `stage` (not given to mixers that mixer_args names)."""
        return {}
