"""FocalNet (Yang et al., "Focal Modulation Networks", NeurIPS 2022).

MetaFormer blocks (zoo.layers.metaformer) with focal modulation (zoo.layers.focal_modulation) as the token
mixer, LayerNorm, on channels-last (B, H, W, C) maps; a 4x4 patchify stem and 2x2 stride-2 conv downsamples
with LayerNorm (zoo.layers.downsample, odd sides zero-padded so any H, W works). FocalNet-L/XL/H (ImageNet-22K)
add overlapping convs (7x7 stem, 3x3 downsamples), post-norm branches and layer scale; the isotropic FocalNet-T/S/B
are one stage of these blocks at stride 16 (`IsotropicFocalNet`, feature levels = blocks).
Checkpoints: the official release (microsoft/FocalNet, linear layers, downsample at the end of a stage) and
timm's `focalnet_*` (1x1 convs, downsample at the start of a stage) both load.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import generate_default_cfgs

from ..layers.downsample import ConvDownsample
from ..layers.init import trunc_normal_init_
from ..layers.focal_modulation import FocalModulation
from ..layers.metaformer import MetaFormerBlock
from ._base import Backbone, Stage
from ._hosts import stage_widths
from ._builder import build_model, cfg, register_variants
from ._convert import rename

__all__ = ['FocalNet', 'IsotropicFocalNet', 'focal_block']


def focal_block(dim: int, focal_level: int, focal_window: int, norm_layer: Callable, mlp_ratio: float = 4.,
                layer_scale_init: Optional[float] = None, post_norm: bool = False,
                post_norm_in_modulation: bool = False, normalize_modulator: bool = False, proj_drop: float = 0.,
                drop_path: float = 0.) -> MetaFormerBlock:
    """One FocalNet block on (B, H, W, C): focal modulation and MLP branches, pre- or post-norm."""
    mixer = FocalModulation(dim, focal_level, focal_window, proj_drop=proj_drop,
                            normalize_modulator=normalize_modulator,
                            norm_layer=norm_layer if post_norm_in_modulation else None)
    return MetaFormerBlock(dim, mixer, norm_layer, mlp_ratio=mlp_ratio, layer_scale_init=layer_scale_init,
                           proj_drop=proj_drop, drop_path=drop_path, fmt='NHWC', post_norm=post_norm)


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
            overlap_downsample: bool = False,
            post_norm: bool = False,
            post_norm_in_modulation: bool = False,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.1,
    ):
        """
        Args:
            overlap_downsample: the stem is a 7x7 stride-4 conv and the downsamples 3x3 stride-2 convs (the
                authors' `use_conv_embed`, FocalNet-L/XL/H) instead of non-overlapping patchify convs.
            post_norm: norms after the modulation / MLP branches (`use_postln`); post_norm_in_modulation: a
                LayerNorm inside the modulation before its output projection (`use_postln_in_modulation`, H).
        """
        super().__init__()
        dims = stage_widths(embed_dim, len(depths))
        dpr = self._setup(in_chans, num_classes, dims, depths, drop_path_rate, patch_size)
        norm_layer = partial(nn.LayerNorm, eps=1e-5)
        block_args = dict(norm_layer=norm_layer, mlp_ratio=mlp_ratio, layer_scale_init=layer_scale_init,
                          post_norm=post_norm, post_norm_in_modulation=post_norm_in_modulation,
                          normalize_modulator=normalize_modulator, proj_drop=proj_drop_rate)

        stem_kernel, stem_pad = (7, 2) if overlap_downsample else (patch_size, 0)
        self.stem = ConvDownsample(in_chans, dims[0], stem_kernel, patch_size, stem_pad, norm_layer=norm_layer,
                                   output_fmt='NHWC')
        down_kernel, down_pad = (3, 1) if overlap_downsample else (2, 0)
        stages = []
        for i, depth in enumerate(depths):
            blocks = [focal_block(dims[i], focal_levels[i], focal_windows[i], drop_path=dpr[i][j], **block_args)
                      for j in range(depth)]
            downsample = ConvDownsample(dims[i - 1], dims[i], down_kernel, 2, down_pad, norm_layer=norm_layer,
                                        input_fmt='NHWC', output_fmt='NHWC') if i else None
            stages.append(Stage(blocks, downsample))
        self._finish(stages, norm_layer(self.num_features), self._classifier_head(global_pool, drop_rate),
                     trunc_normal_init_)


class IsotropicFocalNet(Backbone):
    """The authors' isotropic FocalNets (README "strict comparison with isotropic ViT models"): a 16x16 patchify
    stem and one stage of FocalNet blocks at stride 16, no class token, no position embedding; the final norm and
    the head follow the last block. `features_only` returns chosen blocks' maps (feature_levels = 'blocks')."""
    output_fmt = 'NHWC'
    feature_levels = 'blocks'
    norm_fits_every_level = True
    # timm ViT's token attributes, with their meaning for a model without prefix tokens
    num_prefix_tokens = 0
    has_class_token = False
    no_embed_class = True

    def __init__(
            self,
            img_size=None,  # accepted as by every timm model; fully convolutional, nothing depends on it
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 384,
            depth: int = 12,
            focal_level: int = 3,
            focal_window: int = 3,
            patch_size: int = 16,
            mlp_ratio: float = 4.,
            layer_scale_init: Optional[float] = None,
            post_norm: bool = False,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.2,
    ):
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.num_features = self.embed_dim = embed_dim
        self.min_input_size = (patch_size, patch_size)
        norm_layer = partial(nn.LayerNorm, eps=1e-5)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.stem = ConvDownsample(in_chans, embed_dim, patch_size, patch_size, norm_layer=norm_layer,
                                   output_fmt='NHWC')
        self.blocks = nn.Sequential(*[
            focal_block(embed_dim, focal_level, focal_window, norm_layer, mlp_ratio, layer_scale_init, post_norm,
                        proj_drop=proj_drop_rate, drop_path=dpr[i]) for i in range(depth)])
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f'blocks.{i}') for i in range(depth)]
        self.norm = norm_layer(embed_dim)
        self.head = self._classifier_head(global_pool, drop_rate)
        self.apply(trunc_normal_init_)

    def _level(self, i: int, block: nn.Module, x: torch.Tensor, ctx) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        return block(x)

    def _take(self, i: int, x: torch.Tensor, ctx, norm: bool, output_fmt: str) -> torch.Tensor:
        """Block i's map; `norm` applies the final norm to every taken block (one width: timm's ViT semantics)."""
        return self._format(self.norm(x) if norm else x, output_fmt)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return dict(stem=r'^stem', blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])


# --- checkpoints -----------------------------------------------------------------------------------------
_ZOO_FROM_FOREIGN = [  # shared by the official release and timm once the downsamples sit at stage starts
    (r'^patch_embed\.', 'stem.'),
    (r'^layers\.', 'stages.'),
    (r'\.modulation\.', '.mixer.'),
    (r'\.gamma_(\d)$', r'.ls\1.gamma'),
    (r'\.norm(\d)_post\.', r'.norm\1.'),  # timm's post-norms (L/XL/H); the release names them norm1 / norm2
    (r'\.mixer\.ln\.', '.mixer.norm.'),  # the release's norm inside the modulation (H)
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
]


def checkpoint_filter_fn(state_dict, model: Backbone):
    """Official FocalNet release (hierarchical or isotropic) or timm `focalnet_*` -> zoo layout (zoo checkpoints
    pass through)."""
    if not any(k.startswith(('stages.', 'blocks.')) for k in state_dict):
        if 'patch_embed.proj.weight' in state_dict:
            # the release downsamples at the end of stage i, timm and zoo at the start of stage i + 1
            state_dict = rename(state_dict, [
                (r'^layers\.(\d+)\.downsample', lambda m: f'layers.{int(m.group(1)) + 1}.downsample')])
        state_dict = rename(state_dict, _ZOO_FROM_FOREIGN)
        if isinstance(model, IsotropicFocalNet):  # the release's isotropic models are one-stage FocalNets
            state_dict = rename(state_dict, [(r'^stages\.0\.blocks\.', 'blocks.')])
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
    model_cls = IsotropicFocalNet if 'depth' in kwargs else FocalNet
    levels = kwargs.get('depth') or len(kwargs.get('depths', (2, 2, 6, 2)))  # isotropic: every block is a level
    return build_model(model_cls, variant, pretrained, num_stages=levels, checkpoint_filter=checkpoint_filter_fn,
                       **kwargs)


_URL = 'https://github.com/microsoft/FocalNet/releases/download/v1.0.0/'
_BLOB = 'https://projects4jw.blob.core.windows.net/focalnet/release/classification/'
_IN22K = dict(num_classes=21842, license='mit')  # the release's 22K label order (README: 1K = the first 1000)
default_cfgs = generate_default_cfgs({
    **{f'zoo_focalnet_{v}.ms_in1k': cfg(_URL + f'focalnet_{v}.pth', first_conv='stem.proj', license='mit')
       for v in ('tiny_srf', 'tiny_lrf', 'small_srf', 'small_lrf', 'base_srf', 'base_lrf')},
    # ImageNet-22K pretrained (README "ImageNet-22K Pretraining"): L / XL at 384, H at 224
    **{f'zoo_focalnet_{size}_fl{fl}.ms_in22k': cfg(
        _URL + f'focalnet_{size}_lrf_384' + ('_fl4' if fl == 4 else '') + '.pth', first_conv='stem.proj',
        input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0, **_IN22K)
       for size in ('large', 'xlarge') for fl in (3, 4)},
    **{f'zoo_focalnet_huge_fl{fl}.ms_in22k': cfg(
        _BLOB + 'focalnet_huge_lrf_224' + ('_fl4' if fl == 4 else '') + '.pth', first_conv='stem.proj', **_IN22K)
       for fl in (3, 4)},
    **{f'zoo_focalnet_{size}_iso.ms_in1k': cfg(_BLOB + f'focalnet_{size}_iso_16.pth', first_conv='stem.proj',
                                               pool_size=(14, 14), license='mit')
       for size in ('tiny', 'small', 'base')},
})

# variants as data: width, depths and focal levels (srf: 2 levels, kernels 3-5; lrf: 3 levels, kernels 3-5-7)
_SRF, _LRF = dict(focal_levels=(2, 2, 2, 2)), dict(focal_levels=(3, 3, 3, 3))
# L / XL / H (the release's configs/focalnet_{large,xlarge,huge}_fl{3,4}.yaml): conv embedding, post-norm,
# layer scale 1e-4; fl3 with kernels 5-7-9 (L, XL) or 3-5-7 (H), fl4 with 3-5-7-9
_LARGE = dict(depths=(2, 2, 18, 2), overlap_downsample=True, post_norm=True, layer_scale_init=1e-4)
_FL3_WIDE = dict(focal_levels=(3, 3, 3, 3), focal_windows=(5, 5, 5, 5))
_FL4 = dict(focal_levels=(4, 4, 4, 4), focal_windows=(3, 3, 3, 3))
FOCALNET_VARIANTS = {
    'zoo_focalnet_tiny_srf': dict(embed_dim=96, depths=(2, 2, 6, 2), **_SRF),
    'zoo_focalnet_tiny_lrf': dict(embed_dim=96, depths=(2, 2, 6, 2), **_LRF),
    'zoo_focalnet_small_srf': dict(embed_dim=96, depths=(2, 2, 18, 2), **_SRF),
    'zoo_focalnet_small_lrf': dict(embed_dim=96, depths=(2, 2, 18, 2), **_LRF),
    'zoo_focalnet_base_srf': dict(embed_dim=128, depths=(2, 2, 18, 2), **_SRF),
    'zoo_focalnet_base_lrf': dict(embed_dim=128, depths=(2, 2, 18, 2), **_LRF),
    'zoo_focalnet_large_fl3': dict(embed_dim=192, **_LARGE, **_FL3_WIDE),
    # the release's large_fl4 config (only it) also sets NORMALIZE_MODULATOR; timm's focalnet_large_fl4 does not
    'zoo_focalnet_large_fl4': dict(embed_dim=192, **_LARGE, **_FL4, normalize_modulator=True),
    'zoo_focalnet_xlarge_fl3': dict(embed_dim=256, **_LARGE, **_FL3_WIDE),
    'zoo_focalnet_xlarge_fl4': dict(embed_dim=256, **_LARGE, **_FL4),
    'zoo_focalnet_huge_fl3': dict(embed_dim=352, **_LARGE, **_LRF, post_norm_in_modulation=True),
    'zoo_focalnet_huge_fl4': dict(embed_dim=352, **_LARGE, **_FL4, post_norm_in_modulation=True),
    # isotropic (classification/focalnet.py focalnet_{tiny,small,base}_iso): 12 blocks at stride 16, kernels
    # 3-5-7; the base model adds layer scale and post-norm there
    'zoo_focalnet_tiny_iso': dict(embed_dim=192, depth=12),
    'zoo_focalnet_small_iso': dict(embed_dim=384, depth=12),
    'zoo_focalnet_base_iso': dict(embed_dim=768, depth=12, layer_scale_init=1e-4, post_norm=True),
}

register_variants(_create, FOCALNET_VARIANTS, __name__)
