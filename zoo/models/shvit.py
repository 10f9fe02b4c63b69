"""SHViT (Yun & Ro, "SHViT: Single-Head Vision Transformer with Memory Efficient Macro Design", CVPR 2024).

A 16x16 conv stem (zoo.layers.conv.ConvStem) and three stages of blocks
x + dwconv-BN(x) -> x + mixer(x) -> x + FFN(x), where the mixer is nothing in stage 1 and single-head
attention on a partial channel split (zoo.layers.attention.single_head) later; stages 2 and 3 start with
conv/FFN blocks around an inverted-bottleneck stride-2 merge. Conv-BN throughout (NCHW), any H, W (every
strided conv pads k // 2, so maps are ceil(H / stride)). BatchNorm1d + linear head.
Checkpoints: the official release (ysj9909/SHViT, unfused conv-BN, `{'model': ...}`; fused deploy state
dicts are unfused on load) and timm's `shvit_*` both load.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models import generate_default_cfgs

from ..layers.attention.single_head import SingleHeadAttention
from ..layers.conv import ConvBnMlp, ConvStem, conv_bn
from ..layers.head import BnLinearClassifierHead
from ..layers.squeeze_excite import SqueezeExcite
from ._base import Backbone, Stage
from ._builder import build_model, cfg, register_variants
from ._convert import CheckpointMismatchError, rename

__all__ = ['SHViT', 'SHViTBlock']


class SHViTBlock(nn.Module):
    """x + dw3x3-BN(x), then x + mixer(x) (if any), then x + FFN(x) (1x1 conv-BN, ReLU, 1x1 conv-BN, ratio 2)."""

    def __init__(self, dim: int, mixer: Optional[nn.Module] = None, dw_bn_init: float = 0., act_layer=nn.ReLU):
        super().__init__()
        self.conv = conv_bn(dim, dim, 3, groups=dim, bn_weight_init=dw_bn_init, residual=True)
        self.mixer = mixer
        self.ffn = ConvBnMlp(dim, 2 * dim, act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # x + dw3x3-BN(x)
        if self.mixer is not None:
            x = x + self.mixer(x)
        return x + self.ffn(x)


def patch_merging(dim: int, out_dim: int, act_layer=nn.ReLU) -> nn.Sequential:
    """1x1 conv-BN-act to 4 x dim -> 3x3 stride-2 depthwise conv-BN-act -> squeeze-excite -> 1x1 conv-BN."""
    hidden = 4 * dim
    return nn.Sequential(OrderedDict(
        conv1=conv_bn(dim, hidden, act_layer=act_layer),
        conv2=conv_bn(hidden, hidden, 3, stride=2, groups=hidden, act_layer=act_layer),
        se=SqueezeExcite(hidden, 0.25),
        conv3=conv_bn(hidden, out_dim),
    ))


class SHViT(Backbone):
    output_fmt = 'NCHW'
    channels_last = True

    def __init__(
            self,
            img_size=None,  # accepted as by every timm model; fully convolutional, nothing depends on it
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: Sequence[int] = (128, 256, 384),
            partial_dim: Sequence[int] = (32, 64, 96),
            qk_dim: Sequence[int] = (16, 16, 16),
            depth: Sequence[int] = (1, 2, 3),
            types: Sequence[str] = ('s', 's', 's'),
            drop_rate: float = 0.,
            act_layer=nn.ReLU,
    ):
        """
        Args:
            types: per stage, 's' = single-head attention mixer, 'i' = no mixer (conv + FFN only).
        """
        super().__init__()
        self._setup(in_chans, num_classes, embed_dim, depth, stride=16)  # no drop path
        self.stem = ConvStem(in_chans, embed_dim[0], num_layers=4, act_layer=act_layer)
        stages = []
        for i, dim in enumerate(embed_dim):
            downsample = nn.Sequential(
                SHViTBlock(embed_dim[i - 1], dw_bn_init=1., act_layer=act_layer),
                patch_merging(embed_dim[i - 1], dim, act_layer),
                SHViTBlock(dim, dw_bn_init=1., act_layer=act_layer),
            ) if i else None
            blocks = [SHViTBlock(dim, SingleHeadAttention(dim, qk_dim[i], partial_dim[i], act_layer=act_layer)
                                 if types[i] == 's' else None, act_layer=act_layer) for _ in range(depth[i])]
            stages.append(Stage(blocks, downsample))
        self._finish(stages, nn.Identity(), BnLinearClassifierHead(self.num_features, num_classes,
                                                                   pool_type=global_pool, drop_rate=drop_rate))
        if num_classes > 0:  # the authors' init: torch's defaults but for the classifier
            trunc_normal_(self.head.fc.weight, std=.02)


# --- checkpoints -----------------------------------------------------------------------------------------
def _official_stage_rule(m) -> str:
    """blocks{s}.{j}: in stages 2 and 3, entries 0-2 are the downsample and blocks start at 3."""
    stage, j, rest = int(m.group(1)) - 1, int(m.group(2)), m.group(3)
    if stage == 0:
        return f'stages.0.blocks.{j}.{rest}'
    if j < 3:
        return f'stages.{stage}.downsample.{j}.{rest}'
    return f'stages.{stage}.blocks.{j - 3}.{rest}'


_ZOO_FROM_OFFICIAL = [
    (r'^patch_embed\.(\d+)\.', lambda m: f'stem.{int(m.group(1)) // 2}.'),
    (r'^blocks(\d)\.(\d+)\.(.*)$', _official_stage_rule),
    # downsample entries 0 and 2 are Sequential(Residual(dw conv-BN), Residual(FFN)) = one SHViTBlock
    (r'\.downsample\.([02])\.0\.m\.', r'.downsample.\1.conv.'),
    (r'\.downsample\.([02])\.1\.m\.', r'.downsample.\1.ffn.'),
]
_ZOO_FROM_TIMM = [
    (r'^patch_embed\.(\d+)\.', lambda m: f'stem.{int(m.group(1)) // 2}.'),
    # timm: downsample.{0: dw, 1: ffn, 2: merge, 3: dw, 4: ffn}
    (r'\.downsample\.2\.(conv\d|se)\.', r'.downsample.1.\1.'),
    (r'\.downsample\.([0134])\.m\.', lambda m: '.downsample.{}.{}.'.format(
        0 if m.group(1) in '01' else 2, 'conv' if m.group(1) in '03' else 'ffn')),
]
_ZOO_COMMON = [  # both layouts: Residual(...).m, conv-BN `c`, the attention projection behind its act
    (r'\.(conv|mixer|ffn)\.m\.', r'.\1.'),
    (r'\.c\.weight$', '.conv.weight'),
    (r'\.mixer\.proj\.1\.', '.mixer.proj.'),
    (r'^head\.bn\.', 'head.norm.'),
    (r'^head\.l\.', 'head.fc.'),
]


def _unfuse_official(state_dict: Dict[str, torch.Tensor], eps: float = 1e-5) -> Dict[str, torch.Tensor]:
    """The authors' fused (deploy) layout, where `replace_batchnorm` turned every Conv2d_BN into a conv with
    bias, each Residual(dw Conv2d_BN) into one conv holding the identity, and BN_Linear into a linear, back to
    their training layout with identity BatchNorms (exact in eval)."""
    def identity_bn(prefix, bias):
        return {f'{prefix}.bn.weight': torch.ones_like(bias), f'{prefix}.bn.bias': bias,
                f'{prefix}.bn.running_mean': torch.zeros_like(bias),
                f'{prefix}.bn.running_var': torch.full_like(bias, 1. - eps),
                f'{prefix}.bn.num_batches_tracked': torch.tensor(0)}

    out = {}
    for k, v in state_dict.items():
        prefix, _, name = k.rpartition('.')
        if prefix == 'head':
            out[f'head.l.{name}'] = v
            if name == 'weight':
                out.update(identity_bn('head', v.new_zeros(v.shape[1])))
        elif '.se.' in k or state_dict[f'{prefix}.weight'].ndim != 4:
            out[k] = v  # squeeze-excite convs (real conv biases) and GroupNorms are not conv-BN pairs
        else:
            residual = re.search(r'\.conv$', prefix) or re.match(r'blocks[23]\.[02]\.0$', prefix)
            target = prefix + '.m' if residual else prefix
            if name == 'weight':
                v = v.clone()
                if residual:
                    v[:, 0, 1, 1] -= 1.  # x + dw(x) was fused into one dw conv: take the identity out
                out[f'{target}.c.weight'] = v
            else:
                out.update(identity_bn(target, v))
    return out


def checkpoint_filter_fn(state_dict, model: SHViT):
    """Official SHViT release (unfused training checkpoint or fused deploy state dict) or timm `shvit_*`
    -> zoo layout (zoo checkpoints pass through)."""
    if 'stem.0.conv.weight' in state_dict:
        return state_dict
    if 'head_dist.l.weight' in state_dict or 'head_dist.weight' in state_dict:
        raise CheckpointMismatchError('distilled SHViT checkpoints (head_dist) are not supported')
    official = any(k.startswith('blocks1.') for k in state_dict)
    if official and not any(k.endswith('running_var') for k in state_dict):
        state_dict = _unfuse_official(state_dict)
    state_dict = rename(state_dict, (_ZOO_FROM_OFFICIAL if official else _ZOO_FROM_TIMM) + _ZOO_COMMON)
    # the authors' loader reshapes 2-D weights of their release to 1x1 convs ([:, :, None, None]); so do we
    own = model.state_dict()
    return {k: v.reshape(own[k].shape) if k in own and v.ndim == 2 and own[k].ndim == 4 else v
            for k, v in state_dict.items()}


def _create(variant: str, pretrained: bool = False, **kwargs):
    return build_model(SHViT, variant, pretrained, num_stages=3, checkpoint_filter=checkpoint_filter_fn, **kwargs)


_URL = 'https://github.com/ysj9909/SHViT/releases/download/v1.0/'
default_cfgs = generate_default_cfgs({
    f'zoo_shvit_{v}.in1k': cfg(_URL + f'shvit_{v}.pth', first_conv='stem.0.conv', pool_size=(4, 4), crop_pct=0.875,
                               license='mit', **(dict(input_size=(3, 256, 256)) if v == 's4' else {}))
    for v in ('s1', 's2', 's3', 's4')
})

# variants as data: the paper's Table (widths, depths, partial dims); stage 1 has no attention
SHVIT_VARIANTS = {
    'zoo_shvit_s1': dict(embed_dim=(128, 224, 320), depth=(2, 4, 5), partial_dim=(32, 48, 68), types='iss'),
    'zoo_shvit_s2': dict(embed_dim=(128, 308, 448), depth=(2, 4, 5), partial_dim=(32, 66, 96), types='iss'),
    'zoo_shvit_s3': dict(embed_dim=(192, 352, 448), depth=(3, 5, 5), partial_dim=(48, 75, 96), types='iss'),
    'zoo_shvit_s4': dict(embed_dim=(224, 336, 448), depth=(4, 7, 6), partial_dim=(48, 72, 96), types='iss'),
}

register_variants(_create, SHVIT_VARIANTS, __name__)
