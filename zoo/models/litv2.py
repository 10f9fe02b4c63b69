"""LITv2 (Pan et al., NeurIPS 2022, "Fast Vision Transformers with HiLo Attention").

A 4-stage hierarchy on channels-last maps: patch embedding (4x4 conv + LayerNorm), stages 1-2 made of MLP-only
blocks (x + ConvFFN(norm(x)), no attention), stages 3-4 of HiLo attention + ConvFFN blocks (HiLo window 2 in
stage 3 and 1, i.e. plain MSA, in stage 4; alpha 0.9 of the heads Lo-Fi), deformable token merging between
stages. Any input size: the patch embedding and the token merging pad to even sizes, HiLo pads to its window.
Checkpoints: the official release (ziplab/LITv2 classification, `{'model': state_dict}`) loads through the filter.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models import generate_default_cfgs
from timm.models.vision_transformer import init_weights_vit_timm

from ..layers import HiLo, PatchEmbed
from ..layers.dtm import DeformableTokenMerging
from ..layers.mlp import DWConvMlp
from ..layers.residual import residual
from ._base import Backbone, Stage
from ._hosts import stage_widths
from ._builder import build_model, cfg, licensed, register_variants
from ._convert import rename

__all__ = ['LITv2', 'LITBlock']


class LITBlock(nn.Module):
    """x + HiLo(norm1(x)) (when the stage has attention), then x + ConvFFN(norm2(x)), on (B, H, W, C) maps."""

    def __init__(self, dim: int, num_heads: int, window_size: Optional[int], alpha: float = 0.9,
                 mlp_ratio: float = 4., qkv_bias: bool = True, proj_drop: float = 0., drop_path: float = 0.):
        super().__init__()
        if window_size:
            self.norm1 = nn.LayerNorm(dim)
            self.attn = HiLo(dim, num_heads=num_heads, window_size=window_size, alpha=alpha, qkv_bias=qkv_bias)
        else:
            self.norm1 = self.attn = None
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = DWConvMlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            x = residual(x, lambda t: self.drop_path(self.attn(self.norm1(t))))
        return residual(x, lambda t: self.drop_path(self.mlp(self.norm2(t))))


class LITv2(Backbone):
    output_fmt = 'NHWC'

    def __init__(
            self,
            img_size: Union[int, Sequence[int]] = 224,
            patch_size: int = 4,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 96,
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (3, 6, 12, 24),
            local_ws: Sequence[int] = (0, 0, 2, 1),
            alpha: float = 0.9,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.2,
    ):
        """
        Args:
            local_ws: HiLo window size per stage; 0 = an MLP-only stage (the authors' has_msa = 0).
            alpha: fraction of heads in the Lo-Fi branch.
        """
        super().__init__()
        dims = stage_widths(embed_dim, len(depths))
        dpr = self._setup(in_chans, num_classes, dims, depths, drop_path_rate, patch_size, img_size)
        self.stem = PatchEmbed(patch_size, in_chans, dims[0], norm_layer=nn.LayerNorm)
        stages = []
        for i in range(len(depths)):
            blocks = [LITBlock(dims[i], num_heads[i], local_ws[i], alpha=alpha, mlp_ratio=mlp_ratio,
                               qkv_bias=qkv_bias, proj_drop=proj_drop_rate, drop_path=dpr[i][j])
                      for j in range(depths[i])]
            stages.append(Stage(blocks, DeformableTokenMerging(dims[i - 1], dims[i]) if i > 0 else None))
        # trunc_normal(.02) Linear weights, zero biases, as the authors
        self._finish(stages, nn.LayerNorm(self.num_features), self._classifier_head(global_pool, drop_rate),
                     init_weights_vit_timm)


# --- checkpoints -----------------------------------------------------------------------------------------
_ZOO_FROM_OFFICIAL = [
    (r'^patch_embed\.', 'stem.'),
    # the official release merges tokens at the end of a stage, zoo at the start of the next
    (r'^layers\.(\d+)\.downsample\.', lambda m: f'stages.{int(m.group(1)) + 1}.downsample.'),
    (r'^layers\.(\d+)\.blocks\.', r'stages.\1.blocks.'),
    (r'\.downsample\.dconv\.conv_offset\.', '.downsample.conv_offset.'),
    (r'\.downsample\.dconv\.', '.downsample.'),
    (r'\.downsample\.norm_layer\.', '.downsample.norm.'),
    (r'\.mlp\.dwconv\.dwconv\.', '.mlp.dwconv.'),
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
]


def checkpoint_filter_fn(state_dict, model):
    """Official LITv2 classification release (ziplab/LITv2) -> zoo layout."""
    if 'patch_embed.proj.weight' in state_dict:
        state_dict = rename(state_dict, _ZOO_FROM_OFFICIAL)
    return state_dict


def _create(variant: str, pretrained: bool = False, **kwargs):
    return build_model(LITv2, variant, pretrained, num_stages=len(kwargs.get('depths', (2, 2, 6, 2))),
                       checkpoint_filter=checkpoint_filter_fn, **kwargs)


_URL = 'https://github.com/ziplab/LITv2/releases/download/v1.0/'
default_cfgs = generate_default_cfgs(licensed('apache-2.0', {
    # eval as the authors: 224 -> resize 256 bicubic + center crop (0.875); 384 -> resize to 384, no crop
    'zoo_litv2_small.in1k': cfg(_URL + 'litv2_s.pth', crop_pct=0.875),
    'zoo_litv2_medium.in1k': cfg(_URL + 'litv2_m.pth', crop_pct=0.875),
    'zoo_litv2_base.in1k': cfg(_URL + 'litv2_b.pth', crop_pct=0.875),
    'zoo_litv2_base_384.in1k': cfg(_URL + 'litv2_b_384.pth', input_size=(3, 384, 384), pool_size=(12, 12),
                                   crop_pct=1.0),
}))

# variants as data (ziplab/LITv2 classification/configs): C, depths, heads; HiLo ws (0, 0, 2, 1), alpha 0.9
LITV2_VARIANTS = {
    'zoo_litv2_small': dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2),
    'zoo_litv2_medium': dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3),
    'zoo_litv2_base': dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5),
    'zoo_litv2_base_384': dict(img_size=384, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                               drop_path_rate=0.5),
}

register_variants(_create, LITV2_VARIANTS, __name__)
