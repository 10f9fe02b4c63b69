"""Swin Transformer (Liu et al., ICCV 2021): shifted-window attention in a 4-stage hierarchy.

The host (stages of norm -> token mixer -> norm -> MLP blocks with patch merging between stages) takes its
token mixer as an argument, so Agent-Swin and InLine-Swin are this host with another mixer.
Checkpoints: the official release (microsoft/Swin-Transformer) and timm's `swin_*` weights both load.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Union

import torch
from timm.layers import to_2tuple
from timm.models import generate_default_cfgs

from ..layers import PatchEmbed, PatchMerging, WindowAttention, window_mask
from ._builder import build_model, cfg, licensed, register_variants
from ._convert import drop, rename, resize_rel_pos_tables
from ._hosts import MixerHost

__all__ = ['Swin', 'checkpoint_filter_fn', 'to_official_layout']


class Swin(MixerHost):
    def __init__(self, patch_size: int = 4, window_size: Union[int, Sequence[int]] = 7,
                 mixer_layer: Callable = WindowAttention, **kwargs):
        """
        Args:
            patch_size: the patch embedding's stride.
            window_size: one window size for all stages, or one per stage; odd blocks shift by half a window.
            mixer_layer: token mixer class, called as mixer_layer(dim=, num_heads=, window_size=, shift_size=,
                qkv_bias=, attn_drop=, proj_drop=, **mixer_args[stage]); a mixer_args dict may name its own
                `mixer_layer` and `window_size`.
            **kwargs: the host's (MixerHost): img_size, embed_dim, depths, num_heads, mlp_ratio, drop rates, ...
        """
        self.patch_size = patch_size
        num_stages = len(kwargs.get('depths', (2, 2, 6, 2)))
        self._windows = [to_2tuple(window_size)] * num_stages if isinstance(window_size, int) else \
            [to_2tuple(w) for w in window_size]
        super().__init__(mixer_layer=mixer_layer, **kwargs)

    def _stem(self, in_chans, dim, feat_size, norm_layer, drop_rate):
        return PatchEmbed(self.patch_size, in_chans, dim, norm_layer=norm_layer)

    def _downsample(self, in_dim, out_dim, feat_size, norm_layer, drop_rate):
        return PatchMerging(in_dim, out_dim, norm_layer=norm_layer)

    def _window(self, stage, block, feat_size, window_size):
        return to_2tuple(window_size if window_size is not None else self._windows[stage]), block % 2 == 1

    def _resize(self, window_size=None) -> None:
        """Shift masks follow `self.img_size`; a new window size (one, or one per stage) resamples the tables."""
        feat_sizes = self._stage_sizes()
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
    feat_sizes = model._stage_sizes()
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

# variants as data: the paper's Table (C, depths, heads) per size, and window size per resolution
SWIN_SIZES = {
    'tiny': dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'small': dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'base': dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    'large': dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}
SWIN_VARIANTS = {
    'zoo_swin_tiny': SWIN_SIZES['tiny'],
    'zoo_swin_small': SWIN_SIZES['small'],
    'zoo_swin_base': SWIN_SIZES['base'],
    'zoo_swin_large': SWIN_SIZES['large'],
    'zoo_swin_base_384': dict(img_size=384, window_size=12, **SWIN_SIZES['base']),
    'zoo_swin_large_384': dict(img_size=384, window_size=12, **SWIN_SIZES['large']),
}


register_variants(_create, SWIN_VARIANTS, __name__)
