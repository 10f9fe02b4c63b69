"""PoolFormer (Yu et al., "MetaFormer is actually what you need for vision", CVPR 2022).

MetaFormer blocks (zoo.layers.metaformer) with the pooling token mixer (zoo.layers.pooling), GroupNorm(1)
norms and layer scale, on NCHW maps; a 7x7 stride-4 conv stem and 3x3 stride-2 conv downsamples
(zoo.layers.downsample, padded so any H, W gives ceil(H / stride) maps).

Head: the authors normalise the last map with GroupNorm(1) and then average it (`head_norm='map'`, the
default, what their released weights were trained with). timm's `poolformer_*` port averages first and
then applies a LayerNorm to the pooled vector (`head_norm='pooled'`): the same weights, a different function
of them. Both checkpoint layouts load into either head (the final norm's weight and bias move between
`norm.` and `head.norm.`).
"""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn
from timm.layers import GroupNorm1, LayerNorm2d, NormMlpClassifierHead
from timm.models import generate_default_cfgs

from ..layers.downsample import ConvDownsample
from ..layers.init import trunc_normal_init_
from ..layers.metaformer import MetaFormerBlock
from ..layers.pooling import PoolMixer
from ._base import Backbone, Stage
from ._builder import build_model, cfg, register_variants
from ._convert import rename

__all__ = ['PoolFormer']


class PoolFormer(Backbone):
    output_fmt = 'NCHW'
    channels_last = True

    def __init__(
            self,
            img_size=None,  # accepted as by every timm model; fully convolutional, nothing depends on it
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: Sequence[int] = (64, 128, 320, 512),
            depths: Sequence[int] = (2, 2, 6, 2),
            pool_size: int = 3,
            mlp_ratio: float = 4.,
            layer_scale_init: float = 1e-5,
            head_norm: str = 'map',
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        """
        Args:
            head_norm: 'map' (authors: GroupNorm(1) on the last map, then average) or 'pooled' (timm's port:
                average, then LayerNorm on the pooled vector).
        """
        super().__init__()
        if head_norm not in ('map', 'pooled'):
            raise ValueError(f"head_norm must be 'map' or 'pooled', got {head_norm!r}")
        self.head_norm = head_norm
        # the authors' stochastic depth rule: linear over all blocks, dpr_j = rate * j / (N - 1)
        dpr = self._setup(in_chans, num_classes, embed_dim, depths, drop_path_rate, 4)
        self.stem = ConvDownsample(in_chans, embed_dim[0], kernel_size=7, stride=4, padding=2)
        stages = []
        for i, depth in enumerate(depths):
            blocks = [MetaFormerBlock(embed_dim[i], PoolMixer(embed_dim[i], pool_size), GroupNorm1, mlp_ratio=mlp_ratio,
                                      layer_scale_init=layer_scale_init, proj_drop=proj_drop_rate,
                                      drop_path=dpr[i][j], fmt='NCHW') for j in range(depth)]
            downsample = ConvDownsample(embed_dim[i - 1], embed_dim[i], kernel_size=3, stride=2,
                                        padding=1) if i else None
            stages.append(Stage(blocks, downsample))
        if head_norm == 'map':
            norm, head = GroupNorm1(self.num_features), self._classifier_head(global_pool, drop_rate)
        else:
            norm = nn.Identity()
            head = NormMlpClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                         norm_layer=LayerNorm2d)
        self._finish(stages, norm, head, trunc_normal_init_)


# --- checkpoints -----------------------------------------------------------------------------------------
_ZOO_FROM_OFFICIAL = [  # sail-sg/poolformer: network.{0,2,4,6} = stages, network.{1,3,5} = downsamples
    (r'^patch_embed\.proj\.', 'stem.proj.'),
    (r'^network\.(\d+)\.(\d+)\.', lambda m: f'stages.{int(m.group(1)) // 2}.blocks.{m.group(2)}.'),
    (r'^network\.(\d+)\.proj\.', lambda m: f'stages.{(int(m.group(1)) + 1) // 2}.downsample.proj.'),
    (r'\.token_mixer\.', '.mixer.'),
    (r'\.layer_scale_(\d)$', r'.ls\1.gamma'),
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
]
_ZOO_FROM_TIMM = [  # timm metaformer.py `poolformer_*`
    (r'^stem\.conv\.', 'stem.proj.'),
    (r'\.downsample\.conv\.', '.downsample.proj.'),
    (r'\.token_mixer\.', '.mixer.'),
    (r'\.layer_scale(\d)\.scale$', r'.ls\1.gamma'),
]


def checkpoint_filter_fn(state_dict, model: PoolFormer):
    """Official PoolFormer release or timm `poolformer_*` -> zoo layout, for either head_norm."""
    if 'network.0.0.mlp.fc1.weight' in state_dict:
        state_dict = rename(state_dict, _ZOO_FROM_OFFICIAL)
    elif 'stem.conv.weight' in state_dict:
        state_dict = rename(state_dict, _ZOO_FROM_TIMM)
    # the final norm: on the map (norm.*) or on the pooled vector (head.norm.*), whichever the model has
    src, dst = ('head.norm.', 'norm.') if model.head_norm == 'map' else ('norm.', 'head.norm.')
    return {dst + k[len(src):] if k.startswith(src) else k: v for k, v in state_dict.items()}


def _create(variant: str, pretrained: bool = False, **kwargs):
    return build_model(PoolFormer, variant, pretrained, num_stages=len(kwargs.get('depths', (2, 2, 6, 2))),
                       checkpoint_filter=checkpoint_filter_fn, **kwargs)


_URL = 'https://github.com/sail-sg/poolformer/releases/download/v1.0/'
default_cfgs = generate_default_cfgs({
    f'zoo_poolformer_{v}.sail_in1k': cfg(_URL + f'poolformer_{v}.pth.tar', first_conv='stem.proj',
                                         crop_pct=0.9 if v.startswith('s') else 0.95, license='apache-2.0')
    for v in ('s12', 's24', 's36', 'm36', 'm48')
})

# variants as data: the paper's Table (widths, depths) and the released layer-scale init
_S, _M = (64, 128, 320, 512), (96, 192, 384, 768)
POOLFORMER_VARIANTS = {
    'zoo_poolformer_s12': dict(embed_dim=_S, depths=(2, 2, 6, 2), layer_scale_init=1e-5),
    'zoo_poolformer_s24': dict(embed_dim=_S, depths=(4, 4, 12, 4), layer_scale_init=1e-5),
    'zoo_poolformer_s36': dict(embed_dim=_S, depths=(6, 6, 18, 6), layer_scale_init=1e-6),
    'zoo_poolformer_m36': dict(embed_dim=_M, depths=(6, 6, 18, 6), layer_scale_init=1e-6),
    'zoo_poolformer_m48': dict(embed_dim=_M, depths=(8, 8, 24, 8), layer_scale_init=1e-6),
}

register_variants(_create, POOLFORMER_VARIANTS, __name__)
