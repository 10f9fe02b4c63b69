"""Swin Transformer (Liu et al., ICCV 2021): shifted-window attention in a 4-stage hierarchy.

The host (stages of norm -> token mixer -> norm -> MLP blocks with patch merging between stages) takes its
token mixer as an argument, so Agent-Swin and InLine-Swin are this host with another mixer.
Checkpoints: the official release (microsoft/Swin-Transformer) and timm's `swin_*` weights both load.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import ClassifierHead, DropPath, to_2tuple, trunc_normal_
from timm.models import generate_default_cfgs, register_model

from ..layers import Mlp, PatchEmbed, PatchMerging, WindowAttention, clamp_window, window_mask
from ._base import Backbone, Stage
from ._builder import build_model, cfg, licensed, register_variants
from ._convert import drop, rename, resize_rel_pos_tables

__all__ = ['Swin', 'SwinBlock']


class SwinBlock(nn.Module):
    """x + mixer(norm(x)), then x + mlp(norm(x)), on (B, H, W, C) maps."""

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

    def _window_shift(self, feat_size):
        shift = tuple(w // 2 for w in self.target_window) if self.shifted else (0, 0)
        return clamp_window(feat_size, self.target_window, shift)

    def set_input_size(self, feat_size: Tuple[int, int], window_size: Optional[Tuple[int, int]] = None):
        if window_size is not None:
            self.target_window = to_2tuple(window_size)
        self.attn.set_window_size(*self._window_shift(feat_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class Swin(Backbone):
    output_fmt = 'NHWC'

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: int = 4,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 96,
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (3, 6, 12, 24),
            window_size: Union[int, Sequence[int]] = 7,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.1,
            norm_layer: Callable = nn.LayerNorm,
            mixer_layer: Callable = WindowAttention,
            mixer_args: Optional[Sequence[Dict]] = None,
    ):
        """
        Args:
            window_size: one window size for all stages, or one per stage.
            mixer_layer: token mixer class, called as mixer_layer(dim=, num_heads=, window_size=, shift_size=,
                qkv_bias=, attn_drop=, proj_drop=, **mixer_args[stage]).
            mixer_args: extra mixer keyword arguments, one dict per stage, or a list of one dict per block of
                that stage. A dict may also name its own `mixer_layer` and `window_size`, so hybrids (global
                agent / InLine attention in some blocks, window attention in others) stay this host.
        """
        super().__init__()
        num_stages = len(depths)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.img_size = to_2tuple(img_size)
        self.patch_size = patch_size
        self.min_input_size = (patch_size * 2 ** (num_stages - 1),) * 2
        dims = [embed_dim * 2 ** i for i in range(num_stages)]
        self.num_features = dims[-1]
        windows = [to_2tuple(window_size)] * num_stages if isinstance(window_size, int) else \
            [to_2tuple(w) for w in window_size]
        mixer_args = mixer_args or [{}] * num_stages
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).split(list(depths))

        self.stem = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer=norm_layer)
        stages, self.feature_info = [], []
        for i, feat_size in enumerate(self._feat_sizes(self.img_size, num_stages)):
            blocks = []
            for j in range(depths[i]):
                args = dict(mixer_args[i][j] if isinstance(mixer_args[i], (list, tuple)) else mixer_args[i])
                blocks.append(SwinBlock(
                    dims[i], num_heads[i], to_2tuple(args.pop('window_size', windows[i])), shifted=j % 2 == 1,
                    feat_size=feat_size, mixer_layer=args.pop('mixer_layer', mixer_layer), mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate,
                    drop_path=dpr[i][j].item(), norm_layer=norm_layer, **args))
            downsample = PatchMerging(dims[i - 1], dims[i], norm_layer=norm_layer) if i > 0 else None
            stages.append(Stage(blocks, downsample))
            self.feature_info.append(dict(num_chs=dims[i], reduction=patch_size * 2 ** i, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.norm = norm_layer(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                   input_fmt='NHWC')
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def _feat_sizes(self, img_size: Tuple[int, int], num_stages: int):
        size = [math.ceil(s / self.patch_size) for s in img_size]
        sizes = []
        for i in range(num_stages):
            sizes.append(tuple(size))
            size = [math.ceil(s / 2) for s in size]
        return sizes

    def _resize(self, window_size=None) -> None:
        """Shift masks follow `self.img_size`; a new window size (one, or one per stage) resamples the tables."""
        feat_sizes = self._feat_sizes(self.img_size, len(self.stages))
        for i, stage in enumerate(self.stages):
            win = window_size if window_size is None or isinstance(window_size, int) else window_size[i]
            for block in stage.blocks:
                block.set_input_size(feat_sizes[i], to_2tuple(win) if win is not None else None)


# --- checkpoints -----------------------------------------------------------------------------------------
_ZOO_FROM_TIMM = [
    (r'^patch_embed\.', 'stem.'),
    (r'^layers\.', 'stages.'),
    (r'attn\.relative_position_bias_table', 'attn.rel_pos.relative_position_bias_table'),
]


def checkpoint_filter_fn(state_dict, model):
    """Official Swin release or timm `swin_*` -> zoo layout (zoo checkpoints pass through)."""
    if not any(k.startswith('stages.') for k in state_dict):
        state_dict = drop(state_dict, [r'relative_position_index$', r'attn_mask$'])
        if 'layers.0.downsample.reduction.weight' in state_dict:
            # the official release merges patches at the end of a stage, timm and zoo at the start of the next
            state_dict = rename(state_dict, [
                (r'^layers\.(\d+)\.downsample', lambda m: f'layers.{int(m.group(1)) + 1}.downsample'),
                (r'^head\.(weight|bias)$', r'head.fc.\1'),
            ])
        state_dict = rename(state_dict, _ZOO_FROM_TIMM)
    return resize_rel_pos_tables(state_dict, model)


def to_official_layout(model: Swin) -> Dict[str, Dict[str, torch.Tensor]]:
    """The zoo model's weights in the official release's layout ({'model': ...}, buffers included):
    the inverse of checkpoint_filter_fn, for sharing weights with the authors' code."""
    state_dict = rename(model.state_dict(), [
        (r'^stem\.', 'patch_embed.'),
        (r'^stages\.(\d+)\.downsample', lambda m: f'layers.{int(m.group(1)) - 1}.downsample'),
        (r'^stages\.', 'layers.'),
        (r'attn\.rel_pos\.', 'attn.'),
        (r'^head\.fc\.', 'head.'),
    ])
    feat_sizes = model._feat_sizes(model.img_size, len(model.stages))
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            prefix = f'layers.{i}.blocks.{j}.'
            state_dict[prefix + 'attn.relative_position_index'] = block.attn.rel_pos.index.clone()
            if any(block.attn.shift_size):
                mask = window_mask(*feat_sizes[i], block.attn.window_size, block.attn.shift_size)
                state_dict[prefix + 'attn_mask'] = mask.clamp_min(-100.)  # the authors' buffer holds -100
    return {'model': state_dict}


def _create(variant: str, pretrained: bool = False, **kwargs):
    return build_model(Swin, variant, pretrained, num_stages=len(kwargs.get('depths', (2, 2, 6, 2))),
                       checkpoint_filter=checkpoint_filter_fn, **kwargs)


_URL = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'
_URL_V108 = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.8/'


def _in22k_cfgs():
    """The authors' ImageNet-22K checkpoints (`_22k.pth`, 21841 classes) and their 22K -> 1K fine-tunes
    (`_22kto1k[_finetune].pth`) that the 1K tags above do not already name."""
    cfgs = {}
    for size, res, url, fine_tune in (('tiny', 224, _URL_V108, '_22kto1k_finetune'),
                                      ('small', 224, _URL_V108, '_22kto1k_finetune'),
                                      ('base', 224, _URL, '_22kto1k'), ('base', 384, _URL, '_22kto1k'),
                                      ('large', 224, _URL, None), ('large', 384, _URL, None)):
        name = f'zoo_swin_{size}' + ('' if res == 224 else f'_{res}')
        release = url + f'swin_{size}_patch4_window{res // 32}_{res}'  # window 7 at 224, 12 at 384
        shape = dict(input_size=(3, res, res), pool_size=(res // 32, res // 32), crop_pct=.9 if res == 224 else 1.)
        if fine_tune:
            cfgs[f'{name}.ms_in22k_ft_in1k'] = cfg(release + fine_tune + '.pth', **shape)
        cfgs[f'{name}.ms_in22k'] = cfg(release + '_22k.pth', num_classes=21841, **shape)
    return cfgs


default_cfgs = generate_default_cfgs(licensed('mit', {
    'zoo_swin_tiny.ms_in1k': cfg(_URL + 'swin_tiny_patch4_window7_224.pth'),
    'zoo_swin_small.ms_in1k': cfg(_URL + 'swin_small_patch4_window7_224.pth'),
    'zoo_swin_base.ms_in1k': cfg(_URL + 'swin_base_patch4_window7_224.pth'),
    'zoo_swin_large.ms_in22k_ft_in1k': cfg(_URL + 'swin_large_patch4_window7_224_22kto1k.pth'),
    'zoo_swin_base_384.ms_in1k': cfg(_URL + 'swin_base_patch4_window12_384.pth', input_size=(3, 384, 384),
                                     pool_size=(12, 12), crop_pct=1.0),
    'zoo_swin_large_384.ms_in22k_ft_in1k': cfg(_URL + 'swin_large_patch4_window12_384_22kto1k.pth',
                                               input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0),
    # ImageNet-22K (21841 classes, as timm's) and its 1K fine-tunes; T / S were released later (v1.0.8)
    **_in22k_cfgs(),
}))

# variants as data: the paper's Table (C, depths, heads) and window size per resolution
SWIN_VARIANTS = {
    'zoo_swin_tiny': dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'zoo_swin_small': dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'zoo_swin_base': dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    'zoo_swin_large': dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
    'zoo_swin_base_384': dict(img_size=384, window_size=12, embed_dim=128, depths=(2, 2, 18, 2),
                              num_heads=(4, 8, 16, 32)),
    'zoo_swin_large_384': dict(img_size=384, window_size=12, embed_dim=192, depths=(2, 2, 18, 2),
                               num_heads=(6, 12, 24, 48)),
}


register_variants(_create, SWIN_VARIANTS, __name__)
