"""Swin Transformer (Liu et al., ICCV 2021): shifted-window attention in a 4-stage hierarchy.

The host (stages of norm -> token mixer -> norm -> MLP blocks with patch merging between stages) takes its
token mixer as an argument, so Agent-Swin and InLine-Swin are this host with another mixer.
Checkpoints: the official release (microsoft/Swin-Transformer) and timm's `swin_*` weights both load.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import to_2tuple
from timm.models import generate_default_cfgs

from ..layers import PatchEmbed, PatchMerging, WindowAttention, window_mask
from ._base import Stage
from ._builder import build_model, cfg, licensed, register_variants
from ._convert import drop, rename, resize_rel_pos_tables
from ._hosts import MapBlock, MapHost, block_args, stage_widths

__all__ = ['Swin', 'checkpoint_filter_fn', 'to_official_layout']


class Swin(MapHost):
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
        self.patch_size = patch_size
        dims = stage_widths(embed_dim, num_stages)
        dpr = self._setup(img_size, in_chans, num_classes, dims, depths, drop_path_rate)
        windows = [to_2tuple(window_size)] * num_stages if isinstance(window_size, int) else \
            [to_2tuple(w) for w in window_size]
        mixer_args = mixer_args or [{}] * num_stages

        self.stem = PatchEmbed(patch_size, in_chans, dims[0], norm_layer=norm_layer)
        stages = []
        for i, feat_size in enumerate(self._stage_sizes(num_stages=num_stages)):
            blocks = []
            for j in range(depths[i]):
                args = block_args(mixer_args, i, j)
                blocks.append(MapBlock(
                    dims[i], num_heads[i], to_2tuple(args.pop('window_size', windows[i])), shifted=j % 2 == 1,
                    feat_size=feat_size, mixer_layer=args.pop('mixer_layer', mixer_layer), mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate,
                    drop_path=dpr[i][j].item(), norm_layer=norm_layer, **args))
            downsample = PatchMerging(dims[i - 1], dims[i], norm_layer=norm_layer) if i > 0 else None
            stages.append(Stage(blocks, downsample))
        self._finish(stages, dims, norm_layer(self.num_features), global_pool, drop_rate)

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
default_cfgs = generate_default_cfgs(licensed('mit', {
    'zoo_swin_tiny.ms_in1k': cfg(_URL + 'swin_tiny_patch4_window7_224.pth'),
    'zoo_swin_small.ms_in1k': cfg(_URL + 'swin_small_patch4_window7_224.pth'),
    'zoo_swin_base.ms_in1k': cfg(_URL + 'swin_base_patch4_window7_224.pth'),
    'zoo_swin_large.ms_in22k_ft_in1k': cfg(_URL + 'swin_large_patch4_window7_224_22kto1k.pth'),
    'zoo_swin_base_384.ms_in1k': cfg(_URL + 'swin_base_patch4_window12_384.pth', input_size=(3, 384, 384),
                                     pool_size=(12, 12), crop_pct=1.0),
    'zoo_swin_large_384.ms_in22k_ft_in1k': cfg(_URL + 'swin_large_patch4_window12_384_22kto1k.pth',
                                               input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0),
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
