"""FocalNet (Yang et al., "Focal Modulation Networks", NeurIPS 2022).

MetaFormer blocks (zoo.layers.metaformer) with focal modulation (zoo.layers.focal_modulation) as the token
mixer, LayerNorm, on channels-last (B, H, W, C) maps; a 4x4 patchify stem and 2x2 stride-2 conv downsamples
with LayerNorm (zoo.layers.downsample, odd sides zero-padded so any H, W works).
Checkpoints: the official release (microsoft/FocalNet, linear layers, downsample at the end of a stage) and
timm's `focalnet_*` (1x1 convs, downsample at the start of a stage) both load.
"""
from __future__ import annotations

from functools import partial
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ClassifierHead
from timm.models import generate_default_cfgs

from ..layers.downsample import ConvDownsample
from ..layers.init import trunc_normal_init_
from ..layers.focal_modulation import FocalModulation
from ..layers.metaformer import MetaFormerBlock
from ._base import Backbone, Stage
from ._builder import build_model, cfg, register_variants
from ._convert import rename

__all__ = ['FocalNet']


class FocalNet(Backbone):
    output_fmt = 'NHWC'

    def __init__(
            self,
            img_size=None,  # accepted as by every timm model; fully convolutional, nothing depends on it
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 96,
            depths: Sequence[int] = (2, 2, 6, 2),
            focal_levels: Sequence[int] = (2, 2, 2, 2),
            focal_windows: Sequence[int] = (3, 3, 3, 3),
            patch_size: int = 4,
            mlp_ratio: float = 4.,
            layer_scale_init: Optional[float] = None,
            normalize_modulator: bool = False,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.1,
    ):
        super().__init__()
        num_stages = len(depths)
        dims = [embed_dim * 2 ** i for i in range(num_stages)]
        self.in_chans, self.num_classes, self.num_features = in_chans, num_classes, dims[-1]
        self.min_input_size = (patch_size * 2 ** (num_stages - 1),) * 2
        norm_layer = partial(nn.LayerNorm, eps=1e-5)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).split(list(depths))

        self.stem = ConvDownsample(in_chans, dims[0], patch_size, patch_size, norm_layer=norm_layer,
                                   output_fmt='NHWC')
        stages, self.feature_info = [], []
        for i, depth in enumerate(depths):
            blocks = [
                MetaFormerBlock(
                    dims[i],
                    FocalModulation(dims[i], focal_levels[i], focal_windows[i], proj_drop=proj_drop_rate,
                                    normalize_modulator=normalize_modulator),
                    norm_layer, mlp_ratio=mlp_ratio, layer_scale_init=layer_scale_init, proj_drop=proj_drop_rate,
                    drop_path=dpr[i][j].item(), fmt='NHWC')
                for j in range(depth)]
            downsample = ConvDownsample(dims[i - 1], dims[i], 2, 2, norm_layer=norm_layer, input_fmt='NHWC',
                                        output_fmt='NHWC') if i else None
            stages.append(Stage(blocks, downsample))
            self.feature_info.append(dict(num_chs=dims[i], reduction=patch_size * 2 ** i, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.norm = norm_layer(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                   input_fmt='NHWC')
        self.apply(trunc_normal_init_)


# --- checkpoints -----------------------------------------------------------------------------------------
_ZOO_FROM_FOREIGN = [  # shared by the official release and timm once the downsamples sit at stage starts
    (r'^patch_embed\.', 'stem.'),
    (r'^layers\.', 'stages.'),
    (r'\.modulation\.', '.mixer.'),
    (r'\.gamma_(\d)$', r'.ls\1.gamma'),
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
]


def checkpoint_filter_fn(state_dict, model: FocalNet):
    """Official FocalNet release or timm `focalnet_*` -> zoo layout (zoo checkpoints pass through)."""
    if not any(k.startswith('stages.') for k in state_dict):
        if 'patch_embed.proj.weight' in state_dict:
            # the release downsamples at the end of stage i, timm and zoo at the start of stage i + 1
            state_dict = rename(state_dict, [
                (r'^layers\.(\d+)\.downsample', lambda m: f'layers.{int(m.group(1)) + 1}.downsample')])
        state_dict = rename(state_dict, _ZOO_FROM_FOREIGN)
    own = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        if k in own and v.ndim == 4 and own[k].ndim == 2:
            v = v.reshape(own[k].shape)  # the release's modulation.h and all of timm's 1x1 convs: (out, in, 1, 1)
        elif '.focal_layers.' in k and k in own and v.shape[-2:] != own[k].shape[-2:]:
            v = center_kernel(v, own[k].shape[-1])
        out[k] = v
    return out


def center_kernel(w: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad (or crop) a (C, 1, k, k) depthwise kernel to size x size around its centre: how the authors load
    ImageNet weights (focal kernels 3-5-7) into their detection/segmentation models (9-11-13)."""
    p = (size - w.shape[-1]) // 2
    return F.pad(w, (p, p, p, p))  # a negative pad crops


def _create(variant: str, pretrained: bool = False, **kwargs):
    return build_model(FocalNet, variant, pretrained, num_stages=len(kwargs.get('depths', (2, 2, 6, 2))),
                       checkpoint_filter=checkpoint_filter_fn, **kwargs)


_URL = 'https://github.com/microsoft/FocalNet/releases/download/v1.0.0/'
default_cfgs = generate_default_cfgs({
    f'zoo_focalnet_{v}.ms_in1k': cfg(_URL + f'focalnet_{v}.pth', first_conv='stem.proj', license='mit')
    for v in ('tiny_srf', 'tiny_lrf', 'small_srf', 'small_lrf', 'base_srf', 'base_lrf')
})

# variants as data: width, depths and focal levels (srf: 2 levels, kernels 3-5; lrf: 3 levels, kernels 3-5-7)
_SRF, _LRF = dict(focal_levels=(2, 2, 2, 2)), dict(focal_levels=(3, 3, 3, 3))
FOCALNET_VARIANTS = {
    'zoo_focalnet_tiny_srf': dict(embed_dim=96, depths=(2, 2, 6, 2), **_SRF),
    'zoo_focalnet_tiny_lrf': dict(embed_dim=96, depths=(2, 2, 6, 2), **_LRF),
    'zoo_focalnet_small_srf': dict(embed_dim=96, depths=(2, 2, 18, 2), **_SRF),
    'zoo_focalnet_small_lrf': dict(embed_dim=96, depths=(2, 2, 18, 2), **_LRF),
    'zoo_focalnet_base_srf': dict(embed_dim=128, depths=(2, 2, 18, 2), **_SRF),
    'zoo_focalnet_base_lrf': dict(embed_dim=128, depths=(2, 2, 18, 2), **_LRF),
}

register_variants(_create, FOCALNET_VARIANTS, __name__)
