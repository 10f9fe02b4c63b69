"""NAT (Hassani et al., CVPR 2023) and DiNAT (Hassani & Shi, 2022): neighborhood attention in a 4-stage hierarchy.

Overlapping conv tokenizer (two 3x3 stride-2 convs + LayerNorm), blocks of norm -> neighborhood attention (7x7,
relative position bias) -> norm -> MLP (layer scale where the authors use it), 3x3 stride-2 conv downsampling
between stages. DiNAT is NAT with per-block dilations (alternating dilated / local blocks).

Input sizes: any. Where a stage's map is smaller than kernel * dilation (small or detection-size inputs), the
dilation is clipped per axis to the largest that fits, and a side smaller than the kernel itself is zero-padded
before the qkv projection and cropped after, as the authors' NATTEN (0.14) module pads; `small_map='pad'` gives
the authors' exact small-map behaviour (pad to kernel * dilation), see NeighborhoodAttention2D.

Checkpoints: the authors' release (SHI-Labs/Neighborhood-Attention-Transformer, `{'model': ...}` or a bare state
dict with `patch_embed.`, `levels.`, `gamma1`, `rpb` keys) loads with strict=True through the filter below.

The authors' other classification models are configurations of the zoo's hosts with the same attention
(`HostNeighborhoodAttention`): DiNAT_s (`zoo_dinat_s_*`, dinats.py) is the Swin host (patch 4 stem, Swin's patch
merging) with (dilated) NA in every block, and loads through Swin's filter (the authors kept the official Swin
layout); NAT-iso / DiNAT-iso (`zoo_{nat,dinat}_isotropic_*`, isotropic.py) are the DeiT host (patch 16) without
class token or position embedding, with a patch norm and average pooling. Their ViT-rpb baseline (global attention
with a position bias fixed to the 14 x 14 grid) is not registered.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerScale
from timm.models import generate_default_cfgs

from ..layers import Mlp, WindowAttention
from ..layers.attention.neighborhood import NeighborhoodAttention2D
from ..layers.residual import residual
from ._base import Stage
from ._builder import build_model, cfg, licensed, register_variants
from ._convert import rename
from . import deit, swin
from ._hosts import MapHost, init_linears_, stage_widths
from .swin import Swin

__all__ = ['NAT', 'NATBlock', 'HostNeighborhoodAttention', 'GridRelPosAttention']


class ConvTokenizer(nn.Module):
    """(B, C, H, W) -> (B, H / 4, W / 4, D): two overlapping 3x3 stride-2 convs, then a norm (NHWC)."""

    def __init__(self, in_chans: int = 3, embed_dim: int = 64, norm_layer: Callable = nn.LayerNorm):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, 3, stride=2, padding=1),
            nn.Conv2d(embed_dim // 2, embed_dim, 3, stride=2, padding=1),
        )
        self.norm = norm_layer(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    """(B, H, W, C) -> (B, ceil(H / 2), ceil(W / 2), 2C): 3x3 stride-2 conv (no bias), then a norm."""

    def __init__(self, dim: int, out_dim: Optional[int] = None, norm_layer: Callable = nn.LayerNorm):
        super().__init__()
        out_dim = out_dim or 2 * dim
        self.reduction = nn.Conv2d(dim, out_dim, 3, stride=2, padding=1, bias=False)
        self.norm = norm_layer(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class NATBlock(nn.Module):
    """x + ls1(na(norm1(x))), then x + ls2(mlp(norm2(x))), on (B, H, W, C) maps."""

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 7, dilation: int = 1, mlp_ratio: float = 4.,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, proj_drop: float = 0.,
                 drop_path: float = 0., layer_scale: Optional[float] = None, norm_layer: Callable = nn.LayerNorm,
                 small_map: str = 'clip'):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = NeighborhoodAttention2D(dim, num_heads, kernel_size, dilation, qkv_bias=qkv_bias,
                                            rel_pos_bias=True, qk_scale=qk_scale, proj_drop=proj_drop,
                                            small_map=small_map)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = residual(x, lambda t: self.drop_path1(self.ls1(self.attn(self.norm1(t)))))
        return residual(x, lambda t: self.drop_path2(self.ls2(self.mlp(self.norm2(t)))))


class HostNeighborhoodAttention(NeighborhoodAttention2D):
    """NeighborhoodAttention2D (relative position bias on) with the Swin and DeiT hosts' mixer signature, so
    DiNAT_s (Swin host) and the isotropic NAT / DiNAT (DeiT host) are those hosts with this mixer. The window /
    shift / grid the hosts pass are not needed: every token's neighborhood is its own, at any map size. On the DeiT
    host it takes (B, H * W, C) tokens and the grid and attends on the (B, H, W, C) map."""

    def __init__(self, dim: int, num_heads: int, window_size=None, shift_size=None, qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0., num_prefix_tokens: int = 0, kernel_size: int = 7,
                 dilation: int = 1, small_map: str = 'clip'):
        if num_prefix_tokens:
            raise ValueError('neighborhood attention takes patch tokens only (no class token)')
        super().__init__(dim, num_heads, kernel_size, dilation, qkv_bias=qkv_bias, rel_pos_bias=True,
                         attn_drop=attn_drop, proj_drop=proj_drop, small_map=small_map)

    def set_window_size(self, *args) -> None:
        """The hosts' resize hook: nothing depends on the map size."""

    def forward(self, x: torch.Tensor, feat_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        if x.ndim == 3:  # DeiT host tokens
            return super().forward(x.reshape(x.shape[0], *feat_size, x.shape[2])).flatten(1, 2)
        return super().forward(x)


class GridRelPosAttention(WindowAttention):
    """ViT-rpb's mixer (the authors' isotropic.py `MHSARPB`): self-attention over the whole patch grid with a
    relative position bias, i.e. window attention whose one window is the grid the model is built at (the DeiT
    host passes it as `window_size`, and again through `set_window_size` on `set_input_size`, which resamples the
    bias table). The authors' model accepts only its built grid; at another size without `set_input_size` this
    attends within grid-sized windows of the map."""

    def __init__(self, dim: int, num_heads: int, window_size, qkv_bias: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0., num_prefix_tokens: int = 0):
        if num_prefix_tokens:
            raise ValueError('ViT-rpb attention takes patch tokens only (no class token)')
        super().__init__(dim, num_heads, tuple(window_size), qkv_bias=qkv_bias, attn_drop=attn_drop,
                         proj_drop=proj_drop)

    def set_window_size(self, window_size, shift_size=(0, 0)) -> None:
        super().set_window_size(tuple(window_size), shift_size)

    def forward(self, x: torch.Tensor, feat_size: Tuple[int, int]) -> torch.Tensor:
        return super().forward(x.reshape(x.shape[0], *feat_size, x.shape[2])).flatten(1, 2)


class NAT(MapHost):

    def __init__(
            self,
            img_size: Union[int, Sequence[int]] = 224,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 64,
            depths: Sequence[int] = (3, 4, 18, 5),
            num_heads: Sequence[int] = (2, 4, 8, 16),
            kernel_size: int = 7,
            dilations: Optional[Sequence[Sequence[int]]] = None,
            mlp_ratio: float = 3.,
            qkv_bias: bool = True,
            qk_scale: Optional[float] = None,
            layer_scale: Optional[float] = None,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.2,
            norm_layer: Callable = nn.LayerNorm,
            small_map: str = 'clip',
    ):
        """
        Args:
            dilations: one list of per-block dilations per stage (DiNAT), None for NAT (all 1).
            layer_scale: init value of the per-channel residual scales (NAT-S/B, DiNAT-B), None for none.
            small_map: 'clip' or 'pad', how maps smaller than kernel * dilation are handled (module docstring).
        """
        super().__init__()
        num_stages = len(depths)
        dims = stage_widths(embed_dim, num_stages)
        dpr = self._setup(in_chans, num_classes, dims, depths, drop_path_rate, self.patch_size, img_size)
        dilations = dilations or [[1] * d for d in depths]

        self.stem = ConvTokenizer(in_chans, dims[0], norm_layer)
        stages = []
        for i in range(num_stages):
            blocks = [
                NATBlock(dims[i], num_heads[i], kernel_size, dilations[i][j], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                         qk_scale=qk_scale, proj_drop=proj_drop_rate, drop_path=dpr[i][j],
                         layer_scale=layer_scale, norm_layer=norm_layer, small_map=small_map)
                for j in range(depths[i])
            ]
            downsample = ConvDownsampler(dims[i - 1], dims[i], norm_layer) if i > 0 else None
            stages.append(Stage(blocks, downsample))
        self._finish(stages, norm_layer(self.num_features), self._classifier_head(global_pool, drop_rate),
                     init_linears_)


# --- checkpoints -----------------------------------------------------------------------------------------
_ZOO_FROM_AUTHORS = [
    (r'^patch_embed\.', 'stem.'),
    # the authors downsample at the end of a level, zoo at the start of the next stage
    (r'^levels\.(\d+)\.downsample\.', lambda m: f'stages.{int(m.group(1)) + 1}.downsample.'),
    (r'^levels\.', 'stages.'),
    (r'\.gamma1$', '.ls1.gamma'),
    (r'\.gamma2$', '.ls2.gamma'),
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
]


def checkpoint_filter_fn(state_dict, model):
    """The authors' NAT/DiNAT release (SHI-Labs) -> zoo layout; zoo checkpoints pass through."""
    if any(k.startswith('levels.') for k in state_dict):
        state_dict = rename(state_dict, _ZOO_FROM_AUTHORS)
    return state_dict


def _create(variant: str, pretrained: bool = False, **kwargs):
    return build_model(NAT, variant, pretrained, num_stages=len(kwargs.get('depths', (3, 4, 18, 5))),
                       checkpoint_filter=checkpoint_filter_fn, **kwargs)


def _dinat_dilations(s1: int, s2: int, s3: int, depth3: int = 18):
    """DiNAT's schedule: local (1) and dilated blocks alternate; the last stage is all local."""
    return [[1, s1, 1], [1, s2, 1, s2], [1, s3] * (depth3 // 2), [1] * 5]


def _create_dinat_s(variant: str, pretrained: bool = False, kernel_size: int = 7,
                    dilations: Sequence[Sequence[int]] = ((1, 8), (1, 4), (1, 2) * 3, (1, 1)), **kwargs):
    """DiNAT_s (the authors' dinats.py): the Swin host (patch 4 + LayerNorm stem, Swin's patch merging, mlp 4)
    with (dilated) neighborhood attention in every block, one dilation per block. The authors' layout is the
    official Swin one (layers.N.downsample at the end of a level, plain head), so Swin's filter loads it."""
    mixer_args = [[dict(mixer_layer=HostNeighborhoodAttention, kernel_size=kernel_size, dilation=d) for d in stage]
                  for stage in dilations]
    return build_model(Swin, variant, pretrained, num_stages=len(dilations),
                       checkpoint_filter=swin.checkpoint_filter_fn, depths=tuple(len(d) for d in dilations),
                       mixer_args=mixer_args, **kwargs)


def isotropic_checkpoint_filter(state_dict, model):
    """The authors' isotropic release (classification/isotropic.py: patch_embed, layers.N, plain head) -> zoo's
    DeiT host layout; zoo checkpoints pass through. ViT-rpb's bias (heads, 2L - 1, 2L - 1), indexed by key minus
    query, becomes the window attention's Swin-style table ((2L - 1)^2, heads), indexed by query minus key; its
    index buffer is rebuilt, not loaded."""
    state_dict = rename(state_dict, [
        (r'^patch_embed\.', 'stem.'),
        (r'^layers\.', 'blocks.'),
        (r'^head\.(weight|bias)$', r'head.fc.\1'),
    ])
    if not isinstance(model.blocks[0].attn, GridRelPosAttention):
        return state_dict
    out = {}
    for k, v in state_dict.items():
        if k.endswith('.attn.relative_position_index'):
            continue
        if k.endswith('.attn.rpb'):
            k, v = k[:-len('rpb')] + 'rel_pos.relative_position_bias_table', v.flip(1, 2).flatten(1).T
        out[k] = v
    return out


def _create_isotropic(variant: str, pretrained: bool = False, depth: int = 12, kernel_size: int = 7,
                      dilation: int = 1, **kwargs):
    """NAT-iso / DiNAT-iso (the authors' isotropic.py): the DeiT host (patch 16) without class token or position
    embedding, LayerNorm after the patch projection, neighborhood attention in every block (odd blocks dilated
    by `dilation`), average pooling."""
    mixer_args = [dict(kernel_size=kernel_size, dilation=1 if i % 2 == 0 else dilation) for i in range(depth)]
    kwargs.setdefault('out_indices', (2, 5, 8, 11))
    return build_model(deit.DeiT, variant, pretrained, num_stages=depth, checkpoint_filter=isotropic_checkpoint_filter,
                       depth=depth, mixer_layer=HostNeighborhoodAttention, mixer_args=mixer_args, class_token=False,
                       pos_embed='none', patch_norm=True, global_pool='avg', norm_layer=nn.LayerNorm, **kwargs)


_NAT_URL = 'https://shi-labs.com/projects/nat/checkpoints/CLS/'
_DINAT_URL = 'https://shi-labs.com/projects/dinat/checkpoints/'
_384 = dict(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0)
default_cfgs = generate_default_cfgs(licensed('mit', {
    'zoo_nat_mini.in1k': cfg(_NAT_URL + 'nat_mini.pth', first_conv='stem.proj.0', crop_pct=.875),
    'zoo_nat_tiny.in1k': cfg(_NAT_URL + 'nat_tiny.pth', first_conv='stem.proj.0', crop_pct=.875),
    'zoo_nat_small.in1k': cfg(_NAT_URL + 'nat_small.pth', first_conv='stem.proj.0', crop_pct=.875),
    'zoo_nat_base.in1k': cfg(_NAT_URL + 'nat_base.pth', first_conv='stem.proj.0', crop_pct=.875),
    'zoo_dinat_mini.in1k': cfg(_DINAT_URL + 'imagenet1k/dinat_mini_in1k_224.pth', first_conv='stem.proj.0',
                               crop_pct=.875),
    'zoo_dinat_tiny.in1k': cfg(_DINAT_URL + 'imagenet1k/dinat_tiny_in1k_224.pth', first_conv='stem.proj.0',
                               crop_pct=.875),
    'zoo_dinat_small.in1k': cfg(_DINAT_URL + 'imagenet1k/dinat_small_in1k_224.pth', first_conv='stem.proj.0',
                                crop_pct=.875),
    'zoo_dinat_base.in1k': cfg(_DINAT_URL + 'imagenet1k/dinat_base_in1k_224.pth', first_conv='stem.proj.0',
                               crop_pct=.875),
    'zoo_dinat_large.in22k_ft_in1k': cfg(_DINAT_URL + 'imagenet1k/dinat_large_in22k_in1k_224.pth',
                                         first_conv='stem.proj.0', crop_pct=.875),
    'zoo_dinat_large_384.in22k_ft_in1k': cfg(_DINAT_URL + 'imagenet1k/dinat_large_in22k_in1k_384.pth',
                                             first_conv='stem.proj.0', **_384),
    'zoo_dinat_large_384_11x11.in22k_ft_in1k': cfg(_DINAT_URL + 'imagenet1k/dinat_large_in22k_in1k_384_11x11.pth',
                                                   first_conv='stem.proj.0', **_384),
    'zoo_dinat_large_in22k.in22k': cfg(_DINAT_URL + 'imagenet22k/dinat_large_in22k_224.pth',
                                       first_conv='stem.proj.0', num_classes=21841, crop_pct=.875),
    'zoo_dinat_large_in22k_11x11.in22k': cfg(_DINAT_URL + 'imagenet22k/dinat_large_in22k_224_11x11interp.pth',
                                             first_conv='stem.proj.0', num_classes=21841, crop_pct=.875),
    # DiNAT_s: the file names of classification/DiNAT.md's table (dinats.py names them *_in1k_*: manifest mirror)
    **{f'zoo_dinat_s_{size}.in1k': cfg(_DINAT_URL + f'imagenet1k/dinat_s_{size}_1k_224.pth', crop_pct=.875)
       for size in ('tiny', 'small', 'base')},
    'zoo_dinat_s_large.in22k_ft_in1k': cfg(_DINAT_URL + 'imagenet1k/dinat_s_large_1k_224.pth', crop_pct=.875),
    'zoo_dinat_s_large_384.in22k_ft_in1k': cfg(_DINAT_URL + 'imagenet1k/dinat_s_large_1k_384.pth', **_384),
    **{f'zoo_{kind}_isotropic_{size}.in1k': cfg(_DINAT_URL + f'isotropic/{kind}_isotropic_{size}_in1k_224.pth',
                                                pool_size=None, crop_pct=.875)
       for kind in ('nat', 'dinat') for size in ('small', 'base')},
    **{f'zoo_vit_rpb_{size}.in1k': cfg(_DINAT_URL + f'isotropic/vitrpb_{size}_in1k_224.pth', pool_size=None,
                                       crop_pct=.875)
       for size in ('small', 'base')},
}))

# variants as data: the authors' classification/nat.py and dinat.py
_MINI = dict(embed_dim=64, depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3., drop_path_rate=0.2)
_TINY = dict(embed_dim=64, depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3., drop_path_rate=0.2)
_SMALL = dict(embed_dim=96, depths=(3, 4, 18, 5), num_heads=(3, 6, 12, 24), mlp_ratio=2., drop_path_rate=0.3)
_BASE = dict(embed_dim=128, depths=(3, 4, 18, 5), num_heads=(4, 8, 16, 32), mlp_ratio=2., drop_path_rate=0.5,
             layer_scale=1e-5)
_LARGE = dict(embed_dim=192, depths=(3, 4, 18, 5), num_heads=(6, 12, 24, 48), mlp_ratio=2., drop_path_rate=0.35)
_DILATIONS_224 = _dinat_dilations(8, 4, 2)
NAT_VARIANTS = {
    'zoo_nat_mini': _MINI,
    'zoo_nat_tiny': _TINY,
    'zoo_nat_small': dict(_SMALL, layer_scale=1e-5),
    'zoo_nat_base': _BASE,
    'zoo_dinat_mini': dict(_MINI, dilations=_dinat_dilations(8, 4, 2, depth3=6)),
    'zoo_dinat_tiny': dict(_TINY, dilations=_DILATIONS_224),
    'zoo_dinat_small': dict(_SMALL, dilations=_DILATIONS_224),
    'zoo_dinat_base': dict(_BASE, dilations=_DILATIONS_224),
    'zoo_dinat_large': dict(_LARGE, dilations=_DILATIONS_224),
    'zoo_dinat_large_384': dict(_LARGE, img_size=384, dilations=_dinat_dilations(13, 6, 3)),
    'zoo_dinat_large_384_11x11': dict(_LARGE, img_size=384, kernel_size=11, dilations=_DILATIONS_224),
    'zoo_dinat_large_in22k': dict(_LARGE, num_classes=21841, drop_path_rate=0.2, dilations=_DILATIONS_224),
    'zoo_dinat_large_in22k_11x11': dict(_LARGE, num_classes=21841, kernel_size=11, drop_path_rate=0.2,
                                        dilations=_DILATIONS_224),
}

register_variants(_create, NAT_VARIANTS, __name__)

# the authors' classification/dinats.py: Swin-T/S/B/L widths and depths; dilations 8 / 4 / 2 / 1 (224) or
# 13 / 6 / 3 / 1 (384) on every other block
_S_DEEP = ((1, 8), (1, 4), (1, 2) * 9, (1, 1))
DINAT_S_VARIANTS = {
    'zoo_dinat_s_tiny': dict(embed_dim=96, num_heads=(3, 6, 12, 24), dilations=((1, 8), (1, 4), (1, 2) * 3, (1, 1)),
                             drop_path_rate=0.2),
    'zoo_dinat_s_small': dict(embed_dim=96, num_heads=(3, 6, 12, 24), dilations=_S_DEEP, drop_path_rate=0.3),
    'zoo_dinat_s_base': dict(embed_dim=128, num_heads=(4, 8, 16, 32), dilations=_S_DEEP, drop_path_rate=0.5),
    'zoo_dinat_s_large': dict(embed_dim=192, num_heads=(6, 12, 24, 48), dilations=_S_DEEP, drop_path_rate=0.35),
    'zoo_dinat_s_large_384': dict(embed_dim=192, num_heads=(6, 12, 24, 48), img_size=384, drop_path_rate=0.35,
                                  dilations=((1, 13), (1, 6), (1, 3) * 9, (1, 1))),
}
register_variants(_create_dinat_s, DINAT_S_VARIANTS, __name__)

# the authors' classification/isotropic.py: ViT-S / ViT-B widths (heads 12 / 24), depth 12, 7x7 kernels; DiNAT-iso
# dilates every other block by 2
ISOTROPIC_VARIANTS = {
    f'zoo_{kind}_isotropic_{size}': dict(embed_dim=dim, num_heads=heads, dilation=dilation, drop_path_rate=dpr)
    for kind, dilation in (('nat', 1), ('dinat', 2))
    for size, dim, heads, dpr in (('small', 384, 12, 0.1), ('base', 768, 24, 0.4))
}
register_variants(_create_isotropic, ISOTROPIC_VARIANTS, __name__)


def _create_vit_rpb(variant: str, pretrained: bool = False, depth: int = 12, **kwargs):
    """ViT-rpb (the authors' isotropic.py, their baseline for NAT-iso / DiNAT-iso): the same DeiT host with
    global self-attention plus a relative position bias over the patch grid in every block."""
    kwargs.setdefault('out_indices', (2, 5, 8, 11))
    return build_model(deit.DeiT, variant, pretrained, num_stages=depth, checkpoint_filter=isotropic_checkpoint_filter,
                       depth=depth, mixer_layer=GridRelPosAttention, class_token=False, pos_embed='none',
                       patch_norm=True, global_pool='avg', norm_layer=nn.LayerNorm, **kwargs)


VIT_RPB_VARIANTS = {
    'zoo_vit_rpb_small': dict(embed_dim=384, num_heads=12, drop_path_rate=0.1),
    'zoo_vit_rpb_base': dict(embed_dim=768, num_heads=24, drop_path_rate=0.4),
}
register_variants(_create_vit_rpb, VIT_RPB_VARIANTS, __name__)
