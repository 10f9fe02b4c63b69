"""PVT-v1 host (Wang et al., ICCV 2021): a 4-stage pyramid of conv patch embeddings with learned absolute
position embeddings, each stage a stack of pre-norm transformer blocks around a token mixer.

The host takes its mixer as an argument (Agent-PVT, InLine-PVT are this host with the agent / InLine mixer;
zoo/models/agent.py and inline.py register them). Maps are channels-last (B, H, W, C); the mixer is called
as mixer_layer(dim=, num_heads=, window_size=<the stage's map at the built size>, shift_size=(0, 0),
qkv_bias=, attn_drop=, proj_drop=, **mixer_args[stage]) and sees the whole map.
Position embeddings are stored at the built size and resampled bilinearly (as the authors do) for any
other (H, W), on the fly and by `set_input_size` / the checkpoint filters.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_

from ..layers import PatchEmbed
from ._convert import note_resampled, rename
from ._hosts import MixerHost

__all__ = ['PVT', 'PvtEmbed', 'pvt_rename', 'resize_pos_embed', 'resize_pos_embeds']


def resize_pos_embed(pos_embed: torch.Tensor, old_size: Tuple[int, int], new_size: Tuple[int, int]) -> torch.Tensor:
    """(1, H0 * W0, C) -> (1, H * W, C), bilinear with align_corners=False (the authors' resampling)."""
    if tuple(old_size) == tuple(new_size):
        return pos_embed
    C = pos_embed.shape[-1]
    grid = pos_embed.reshape(1, *old_size, C).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_size), mode='bilinear', align_corners=False)
    return grid.flatten(2).transpose(1, 2)


class PvtEmbed(PatchEmbed):
    """Conv patch embedding + LayerNorm + learned absolute position embedding, NCHW or NHWC in, NHWC out."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, grid_size: Tuple[int, int],
                 in_fmt: str = 'NCHW', drop_rate: float = 0.):
        super().__init__(patch_size, in_chans, embed_dim, norm_layer=nn.LayerNorm)
        self.in_fmt = in_fmt
        self.grid_size = tuple(grid_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1], embed_dim))
        trunc_normal_(self.pos_embed, std=.02)
        self.pos_drop = nn.Dropout(drop_rate)

    def set_grid_size(self, grid_size: Tuple[int, int]) -> None:
        grid_size = tuple(grid_size)
        with torch.no_grad():
            pos = resize_pos_embed(self.pos_embed, self.grid_size, grid_size)
        self.pos_embed = nn.Parameter(pos, requires_grad=self.pos_embed.requires_grad)
        self.grid_size = grid_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_fmt == 'NHWC':
            x = x.permute(0, 3, 1, 2)
        x = super().forward(x)
        B, H, W, C = x.shape
        pos = resize_pos_embed(self.pos_embed, self.grid_size, (H, W)).reshape(1, H, W, C)
        return self.pos_drop(x + pos)


class PVT(MixerHost):
    def __init__(self, patch_size: int = 4, embed_dim: Sequence[int] = (64, 128, 320, 512),
                 depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (1, 2, 5, 8),
                 mlp_ratios: Sequence[float] = (8, 8, 4, 4), norm_layer: Callable = partial(nn.LayerNorm, eps=1e-6),
                 final_norm: bool = False, mixer_layer: Optional[Callable] = None, **kwargs):
        """
        Args:
            mlp_ratios: one MLP ratio per stage.
            final_norm: a LayerNorm after the last stage (PVT-v1 has one; Agent-/InLine-PVT drop it).
            mixer_layer: token mixer class (see module doc); required.
            **kwargs: the host's (MixerHost): img_size, drop rates, mixer_args (one dict per stage), ...
        """
        self.patch_size = patch_size
        super().__init__(embed_dim=embed_dim, depths=depths, num_heads=num_heads, mlp_ratio=mlp_ratios,
                         norm_layer=norm_layer, final_norm=final_norm, mixer_layer=mixer_layer, **kwargs)

    def _stem(self, in_chans, dim, feat_size, norm_layer, drop_rate):
        return PvtEmbed(self.patch_size, in_chans, dim, feat_size, 'NCHW', drop_rate)

    def _downsample(self, in_dim, out_dim, feat_size, norm_layer, drop_rate):
        return PvtEmbed(2, in_dim, out_dim, feat_size, 'NHWC', drop_rate)

    def _resize(self) -> None:
        """Position embeddings and mixer position terms are resampled to `self.img_size`'s stage grids."""
        feat_sizes = self._stage_sizes()
        self.stem.set_grid_size(feat_sizes[0])
        for i, stage in enumerate(self.stages):
            if i > 0:
                stage.downsample.set_grid_size(feat_sizes[i])
            for block in stage.blocks:
                block.set_input_size(feat_sizes[i], feat_sizes[i])


def resize_pos_embeds(state_dict, model):
    """Resample `*.pos_embed` (1, H0 * W0, C) entries to the model's grids where the token counts differ
    (square grids in the checkpoint, as the authors train; others, e.g. PVT-v1's stage 4 with its class token, are
    left for the fit check / zoo.load_partial to report)."""
    own = model.state_dict()
    for k, v in state_dict.items():
        side = math.isqrt(v.shape[1]) if k.endswith('pos_embed') and v.ndim == 3 else 0
        if side and side * side == v.shape[1] and k in own and own[k].shape != v.shape:
            state_dict[k] = resize_pos_embed(v, (side, side), model.get_submodule(k[:-len('.pos_embed')]).grid_size)
            note_resampled(k, v, state_dict[k])
    return state_dict


def pvt_rename(state_dict):
    """The authors' PVT layout (patch_embed{s}, pos_embed{s}, block{s}.{j}, attn.q + attn.kv) -> zoo PVT layout."""
    if any(k.startswith('stages.') for k in state_dict):
        return state_dict
    state_dict = rename(state_dict, [
        (r'^patch_embed1\.', 'stem.'),
        (r'^pos_embed1$', 'stem.pos_embed'),
        (r'^patch_embed(\d)\.', lambda m: f'stages.{int(m.group(1)) - 1}.downsample.'),
        (r'^pos_embed(\d)$', lambda m: f'stages.{int(m.group(1)) - 1}.downsample.pos_embed'),
        (r'^block(\d)\.', lambda m: f'stages.{int(m.group(1)) - 1}.blocks.'),
        (r'^head\.(weight|bias)$', r'head.fc.\1'),
    ])
    out = {}
    for k, v in state_dict.items():  # fuse q and kv into one qkv projection (q, k, v order)
        if k.endswith(('attn.kv.weight', 'attn.kv.bias')):
            continue
        if '.attn.q.' in k:
            out[k.replace('.attn.q.', '.attn.qkv.')] = torch.cat([v, state_dict[k.replace('.attn.q.', '.attn.kv.')]])
        else:
            out[k] = v
    return out


# PVT-v1's depths per size, with the drop-path rates of the authors' Agent- / InLine-PVT configs (cfgs/*_pvt_*.yaml)
PVT_SIZES = {
    'tiny': dict(depths=(2, 2, 2, 2), drop_path_rate=0.1),
    'small': dict(depths=(3, 4, 6, 3), drop_path_rate=0.1),
    'medium': dict(depths=(3, 4, 18, 3), drop_path_rate=0.3),
    'large': dict(depths=(3, 8, 27, 3), drop_path_rate=0.3),
}
