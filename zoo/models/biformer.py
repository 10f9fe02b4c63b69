"""BiFormer (Zhu et al., CVPR 2023): bi-level routing attention in a 4-stage conv-downsampled hierarchy.

Blocks work on NCHW maps: x + dwconv3x3(x) (conditional position encoding), then pre-norm token mixer and MLP
on channels-last tokens. Stages 1-3 mix with bi-level routing attention (7 x 7 regions, top-k 1 / 4 / 16
routed regions), stage 4 with global attention plus LePE (`topk=-2` in the authors' code). Any input size
works: the routing attention pads each map to a multiple of the region grid (the authors' `auto_pad`).
Checkpoints: the official release (rayleizhu/BiFormer, `{'model': state_dict}`) loads through the filter.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models import generate_default_cfgs
from timm.models.vision_transformer import init_weights_vit_timm

from ..layers import AttentionLePE, BiLevelRoutingAttention, Mlp
from ..layers.residual import residual
from ._base import Backbone, Stage
from ._builder import build_model, cfg, licensed, register_variants
from ._convert import rename

__all__ = ['BiFormer', 'BiFormerBlock']


class BiFormerBlock(nn.Module):
    """NCHW in/out: x + pos_embed(x); then x + mixer(norm(x)) and x + mlp(norm(x)) channels-last."""

    def __init__(self, dim: int, num_heads: int, topk: int, n_win: int = 7, mlp_ratio: float = 3.,
                 side_dwconv: int = 5, drop_path: float = 0., global_heads: int = 8):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if topk > 0:
            self.attn = BiLevelRoutingAttention(dim, num_heads=num_heads, n_win=n_win, topk=topk,
                                                side_dwconv=side_dwconv)
        elif topk == -2:
            self.attn = AttentionLePE(dim, num_heads=global_heads, side_dwconv=side_dwconv)
        else:
            raise ValueError(f'topk {topk}: use a positive top-k or -2 (global attention with LePE)')
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x + self.pos_embed(x)).permute(0, 2, 3, 1)
        x = residual(x, lambda t: self.drop_path(self.attn(self.norm1(t))))
        x = residual(x, lambda t: self.drop_path(self.mlp(self.norm2(t))))
        return x.permute(0, 3, 1, 2)


def _conv_bn(in_chs: int, out_chs: int) -> list:
    return [nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1), nn.BatchNorm2d(out_chs)]


class BiFormer(Backbone):
    output_fmt = 'NCHW'

    def __init__(
            self,
            img_size: Union[int, Sequence[int]] = 224,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: Sequence[int] = (64, 128, 256, 512),
            depths: Sequence[int] = (2, 2, 8, 2),
            head_dim: int = 32,
            topks: Sequence[int] = (1, 4, 16, -2),
            n_win: int = 7,
            mlp_ratio: float = 3.,
            side_dwconv: int = 5,
            global_heads: int = 8,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        """
        Args:
            embed_dim, depths: per stage.
            head_dim: routing-attention heads per stage = dim // head_dim (qk_dim = dim).
            topks: routed regions per stage; -2 = global attention with LePE (`global_heads` heads, the authors'
                default of 8).
            n_win: regions per side of every map.
        """
        super().__init__()
        dpr = self._setup(in_chans, num_classes, embed_dim, depths, drop_path_rate, 4, img_size)
        c0 = embed_dim[0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, c0 // 2, 3, stride=2, padding=1), nn.BatchNorm2d(c0 // 2), nn.GELU(),
            *_conv_bn(c0 // 2, c0))
        stages = []
        for i in range(len(depths)):
            blocks = [BiFormerBlock(embed_dim[i], embed_dim[i] // head_dim, topks[i], n_win=n_win,
                                    mlp_ratio=mlp_ratio, side_dwconv=side_dwconv, drop_path=dpr[i][j],
                                    global_heads=global_heads)
                      for j in range(depths[i])]
            stages.append(Stage(blocks, nn.Sequential(*_conv_bn(embed_dim[i - 1], embed_dim[i])) if i > 0 else None))
        # trunc_normal(.02) Linear weights, zero biases, as the authors
        self._finish(stages, nn.BatchNorm2d(self.num_features), self._classifier_head(global_pool, drop_rate),
                     init_weights_vit_timm)


# --- checkpoints -----------------------------------------------------------------------------------------
_ZOO_FROM_OFFICIAL = [
    (r'^downsample_layers\.0\.', 'stem.'),
    (r'^downsample_layers\.(\d+)\.', r'stages.\1.downsample.'),
    (r'^stages\.(\d+)\.(\d+)\.', r'stages.\1.blocks.\2.'),
    (r'\.attn\.qkv\.qkv\.', '.attn.qkv.'),
    (r'\.attn\.wo\.', '.attn.proj.'),
    (r'\.mlp\.0\.', '.mlp.fc1.'),
    (r'\.mlp\.3\.', '.mlp.fc2.'),
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
]


def checkpoint_filter_fn(state_dict, model):
    """Official BiFormer release (rayleizhu/BiFormer models/biformer.py layout) -> zoo layout."""
    if 'downsample_layers.0.0.weight' in state_dict:
        state_dict = rename(state_dict, _ZOO_FROM_OFFICIAL)
    return state_dict


def _create(variant: str, pretrained: bool = False, **kwargs):
    return build_model(BiFormer, variant, pretrained, num_stages=len(kwargs.get('depths', (2, 2, 8, 2))),
                       checkpoint_filter=checkpoint_filter_fn, **kwargs)


_URL = 'https://api.onedrive.com/v1.0/shares/{}/root/content'  # the authors' release (README / model_urls)
_cfg = dict(first_conv='stem.0', crop_pct=0.875)  # eval: resize 256 (bicubic), center crop 224
default_cfgs = generate_default_cfgs(licensed('mit', {
    'zoo_biformer_tiny.in1k': cfg(_URL.format('s!AkBbczdRlZvChHEOoGkgwgQzEDlM'), **_cfg),
    'zoo_biformer_small.in1k': cfg(_URL.format('s!AkBbczdRlZvChHDyM-x9KWRBZ832'), **_cfg),
    'zoo_biformer_base.in1k': cfg(_URL.format('s!AkBbczdRlZvChHI_XPhoadjaNxtO'), **_cfg),
}))

# variants as data (rayleizhu/BiFormer models/biformer.py): dims, depths; n_win 7, top-k 1/4/16/global,
# head_dim 32, mlp_ratio 3, LCE 5x5 for every variant
BIFORMER_VARIANTS = {
    'zoo_biformer_tiny': dict(embed_dim=(64, 128, 256, 512), depths=(2, 2, 8, 2)),
    'zoo_biformer_small': dict(embed_dim=(64, 128, 256, 512), depths=(4, 4, 18, 4)),
    'zoo_biformer_base': dict(embed_dim=(96, 192, 384, 768), depths=(4, 4, 18, 4)),
}

register_variants(_create, BIFORMER_VARIANTS, __name__)
