"""MaxViT (Tu et al., ECCV 2022): multi-axis attention. Every block is MBConv -> block attention (local
windows) -> grid attention (a dilated grid over the whole map), each attention followed by an MLP.

Any input size: block and grid attention pad the map to a window / grid multiple inside each block, mask the
padded keys and crop back (at the sizes the released models were trained on nothing is padded, so outputs
equal timm's `maxvit_*_tf_*` there). Window and grid are img_size // 32 (7 at 224, 12 at 384, 16 at 512).
Checkpoints: the official TF release as converted by timm (timm's `maxvit_*_tf_*` weights) loads strictly.
"""
from __future__ import annotations

from functools import partial
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import LayerNorm2d, NormMlpClassifierHead, to_2tuple
from timm.models import generate_default_cfgs
from timm.models.vision_transformer import init_weights_vit_timm

from ..layers.activations import get_act_layer
from ..layers.attention.window import GridAttention, WindowAttention
from ..layers.mbconv import MBConv, MBConvStem
from ..layers.metaformer import MetaFormerBlock
from ._base import Backbone, Stage
from ._builder import build_model, cfg, licensed, register_variants
from ._convert import rename, resize_rel_pos_tables

__all__ = ['MaxViT', 'MaxViTBlock']


class MaxViTBlock(nn.Module):
    """MBConv (strided in a stage's first block) on NCHW, then block and grid attention blocks on NHWC."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, partition_size: Tuple[int, int], head_dim: int = 32,
                 mlp_ratio: float = 4., act_layer: str = 'gelu_tanh', conv_norm_eps: float = 1e-3,
                 attn_norm_eps: float = 1e-5, drop_path: float = 0.):
        super().__init__()
        self.conv = MBConv(in_chs, out_chs, stride=stride, act_layer=act_layer, norm_eps=conv_norm_eps,
                           drop_path=drop_path)
        norm = partial(nn.LayerNorm, eps=attn_norm_eps)
        act = get_act_layer(act_layer)
        heads = out_chs // head_dim
        self.attn_block = MetaFormerBlock(out_chs, WindowAttention(out_chs, heads, window_size=partition_size),
                                          norm, mlp_ratio, act_layer=act, drop_path=drop_path)
        self.attn_grid = MetaFormerBlock(out_chs, GridAttention(out_chs, heads, grid_size=partition_size),
                                         norm, mlp_ratio, act_layer=act, drop_path=drop_path)

    def set_partition_size(self, partition_size: Tuple[int, int]) -> None:
        for blk in (self.attn_block, self.attn_grid):
            blk.mixer.set_window_size(partition_size, (0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).permute(0, 2, 3, 1)
        x = self.attn_grid(self.attn_block(x))
        return x.permute(0, 3, 1, 2)


class MaxViT(Backbone):
    output_fmt = 'NCHW'
    # inference not channels_last: ~1.15x on CPU, but its conv kernels' rounding compounds to 2.3e-4 from timm's
    # logits on MaxViT-B (1e-4 is the bar). Training is: oneDNN's depthwise conv backward is 2-5x faster on
    # channels-last maps, and MBConv's output then permutes to the attention blocks' NHWC without a copy (a
    # MaxViT-T training step 1.06-1.46x in three in-process A/B pairs on one Zen 4 thread)
    channels_last_training = True

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: Sequence[int] = (64, 128, 256, 512),
            depths: Sequence[int] = (2, 2, 5, 2),
            stem_width: int = 64,
            head_dim: int = 32,
            partition_size: Optional[Union[int, Tuple[int, int]]] = None,
            partition_ratio: int = 32,
            mlp_ratio: float = 4.,
            act_layer: str = 'gelu_tanh',
            conv_norm_eps: float = 1e-3,
            attn_norm_eps: float = 1e-5,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        """
        Args:
            partition_size: block window and grid size (default img_size // partition_ratio, as the paper).
            head_dim: channels per head (heads = dim / head_dim).
        """
        super().__init__()
        # the stem halves the map and each stage's first MBConv halves it again: stride 4 at stage 1
        dpr = self._setup(in_chans, num_classes, embed_dim, depths, drop_path_rate, 4, img_size)
        self.partition_ratio = partition_ratio
        self.partition_size = to_2tuple(partition_size) if partition_size else \
            tuple(s // partition_ratio for s in self.img_size)
        self.stem = MBConvStem(in_chans, stem_width, act_layer=act_layer, norm_eps=conv_norm_eps)
        stages, in_chs = [], stem_width
        for i, (dim, depth) in enumerate(zip(embed_dim, depths)):
            blocks = [MaxViTBlock(in_chs if j == 0 else dim, dim, stride=2 if j == 0 else 1,
                                  partition_size=self.partition_size, head_dim=head_dim, mlp_ratio=mlp_ratio,
                                  act_layer=act_layer, conv_norm_eps=conv_norm_eps, attn_norm_eps=attn_norm_eps,
                                  drop_path=dpr[i][j]) for j in range(depth)]
            stages.append(Stage(blocks))
            in_chs = dim
        # no final norm: the head norms (pool -> LayerNorm -> tanh pre-logits -> fc)
        head = NormMlpClassifierHead(self.num_features, num_classes, hidden_size=self.num_features,
                                     pool_type=global_pool, drop_rate=drop_rate,
                                     norm_layer=partial(LayerNorm2d, eps=attn_norm_eps))
        self._finish(stages, nn.Identity(), head, init_weights_vit_timm)

    def _resize(self, partition_size=None) -> None:
        """The window / grid size follows `self.img_size` (or is given); bias tables are resampled."""
        self.partition_size = to_2tuple(partition_size) if partition_size else \
            tuple(s // self.partition_ratio for s in self.img_size)
        for stage in self.stages:
            for block in stage.blocks:
                block.set_partition_size(self.partition_size)


# --- checkpoints -----------------------------------------------------------------------------------------
def _table_from_tf(table: torch.Tensor) -> torch.Tensor:
    """MaxViT's TF bias table (heads, 2h-1, 2w-1), indexed by key - query offset, -> the zoo's
    ((2h-1) * (2w-1), heads) table indexed by query - key offset (Swin layout)."""
    return table.flip(1, 2).permute(1, 2, 0).reshape(-1, table.shape[0])


def checkpoint_filter_fn(state_dict, model):
    """timm `maxvit_*_tf_*` (the official TF release as timm converts it) -> zoo layout."""
    if any(k.endswith('relative_position_bias_table') and v.ndim == 3 for k, v in state_dict.items()):
        state_dict = {k: _table_from_tf(v) if k.endswith('relative_position_bias_table') else v
                      for k, v in state_dict.items()}
        state_dict = rename(state_dict, [(r'\.(attn_block|attn_grid)\.attn\.', r'.\1.mixer.')])
    return resize_rel_pos_tables(state_dict, model)


def _create(variant: str, pretrained: bool = False, **kwargs):
    return build_model(MaxViT, variant, pretrained, num_stages=4, checkpoint_filter=checkpoint_filter_fn,
                       **kwargs)


def _cfg(res: int, timm_tag: str, **kwargs):
    # the authors release TF checkpoints (gs://gresearch/maxvit/ckpts/); timm's conversion of them is on the hub.
    # timm's in1k models at 224 take ImageNet's mean / std, every other tag (0.5, 0.5, 0.5)
    half = (0.5, 0.5, 0.5)
    imagenet = res == 224 and timm_tag.endswith('.in1k')
    return cfg(hf_hub_id=f'timm/{timm_tag}', input_size=(3, res, res), pool_size=(res // 32, res // 32),
               crop_pct=.95 if res == 224 else 1.0, crop_mode='squash' if res > 224 else 'center',
               mean=IMAGENET_DEFAULT_MEAN if imagenet else half, std=IMAGENET_DEFAULT_STD if imagenet else half,
               first_conv='stem.conv1', classifier='head.fc', **kwargs)


# variants as data: the paper's Table 1 (MaxViT-T/S/B/L/XL), window = grid = img_size / 32
_DIMS = {
    'tiny': dict(embed_dim=(64, 128, 256, 512), depths=(2, 2, 5, 2)),
    'small': dict(embed_dim=(96, 192, 384, 768), depths=(2, 2, 5, 2)),
    'base': dict(embed_dim=(96, 192, 384, 768), depths=(2, 6, 14, 2)),
    'large': dict(embed_dim=(128, 256, 512, 1024), depths=(2, 6, 14, 2), stem_width=128),
    'xlarge': dict(embed_dim=(192, 384, 768, 1536), depths=(2, 6, 14, 2), stem_width=192),
}
# released weights per size: ImageNet-1K at every resolution; ImageNet-21K (21843 classes) at 224 and its
# ImageNet-1K fine-tunes at 384 / 512 (README's "21k model" / "1k model" columns)
_IN1K = ('tiny', 'small', 'base', 'large')
_IN21K = ('large', 'xlarge')
MAXVIT_VARIANTS = {}
_cfgs = {}
for _size, _args in _DIMS.items():
    for _res in (224, 384, 512):
        _name = f'zoo_maxvit_{_size}' + ('' if _res == 224 else f'_{_res}')
        _timm = f'maxvit_{_size}_tf_{_res}'
        MAXVIT_VARIANTS[_name] = dict(_args, img_size=_res)
        if _size in _IN1K:
            _cfgs[f'{_name}.in1k'] = _cfg(_res, f'{_timm}.in1k')
        if _size in _IN21K and _res == 224:
            _cfgs[f'{_name}.in21k'] = _cfg(_res, f'{_timm}.in21k', num_classes=21843)
        elif _size in _IN21K:
            _cfgs[f'{_name}.in21k_ft_in1k'] = _cfg(_res, f'{_timm}.in21k_ft_in1k')
default_cfgs = generate_default_cfgs(licensed('apache-2.0', _cfgs))

register_variants(_create, MAXVIT_VARIANTS, __name__)
