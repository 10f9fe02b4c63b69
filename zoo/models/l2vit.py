"""L2ViT (Zheng et al., "The Linear Attention Resurrection in Vision Transformer"): a 4-stage hierarchy whose
stages alternate local window attention (LWA) and enhanced linear global attention (LGA + local concentration
module), each block with conditional (depthwise conv) position encodings, after a 2-conv stem.

Mixers live in zoo/layers/attention/linear.py. Checkpoints: the authors' release (ChuanyangZheng/L2ViT,
ConvNeXt-style {'model': ..., 'model_ema': ...}) loads strictly. There are no position tables to resample.
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, to_2tuple
from timm.models import generate_default_cfgs

from ..layers import LinearGlobalAttention, LocalConcentration, LocalWindowAttention, Mlp
from ..layers.cpe import ConvPosEnc
from ..layers.init import trunc_normal_init_
from ..layers.residual import residual
from ._base import Backbone, Stage
from ._builder import build_model, cfg, licensed, register_variants
from ._convert import rename

__all__ = ['L2ViT', 'L2ViTBlock']


class ConvStem(nn.Module):
    """3x3/2 conv -> BN -> ReLU -> 3x3/2 conv -> BN, then LayerNorm: (B, C, H, W) -> (B, H / 4, W / 4, D)."""

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, 3, stride=2, padding=1), nn.BatchNorm2d(embed_dim // 2), nn.ReLU(),
            nn.Conv2d(embed_dim // 2, embed_dim, 3, stride=2, padding=1), nn.BatchNorm2d(embed_dim),
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = (-x.shape[2]) % 4, (-x.shape[3]) % 4
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class NormConvDown(nn.Module):
    """LayerNorm then 2x2/2 conv (odd sides padded): (B, H, W, C) -> (B, H / 2, W / 2, D)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Conv2d(dim, out_dim, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x).permute(0, 3, 1, 2)
        if x.shape[2] % 2 or x.shape[3] % 2:
            x = F.pad(x, (0, x.shape[3] % 2, 0, x.shape[2] % 2))
        return self.proj(x).permute(0, 2, 3, 1)


class L2ViTBlock(nn.Module):
    """LWA block (global=False): cpe, x + attn(norm(x)), cpe, x + mlp(norm(x)).
    LGA block (global=True): cpe, x + attn(norm(x)), x + lcm(norm(x)), x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, is_global: bool, window_size: Tuple[int, int] = (7, 7),
                 mlp_ratio: float = 4., qkv_bias: bool = True, drop_path: float = 0.,
                 norm_layer: Callable = nn.LayerNorm):
        super().__init__()
        self.is_global = is_global
        self.cpe = nn.ModuleList([ConvPosEnc(dim)] if is_global else [ConvPosEnc(dim), ConvPosEnc(dim)])
        self.norm1 = norm_layer(dim)
        self.attn = LinearGlobalAttention(dim, num_heads, qkv_bias=qkv_bias) if is_global else \
            LocalWindowAttention(dim, num_heads, window_size, qkv_bias=qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        if is_global:
            self.norm3 = norm_layer(dim)
            self.local_mp = LocalConcentration(dim)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe[0](x)
        x = residual(x, lambda t: self.drop_path(self.attn(self.norm1(t))))
        if self.is_global:
            x = residual(x, lambda t: self.drop_path(self.local_mp(self.norm3(t))))
        else:
            x = self.cpe[1](x)
        return residual(x, lambda t: self.drop_path(self.mlp(self.norm2(t))))


class L2ViT(Backbone):
    output_fmt = 'NHWC'

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: Sequence[int] = (96, 192, 384, 768),
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (3, 6, 12, 24),
            window_size: int = 7,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.1,
    ):
        """Blocks alternate within each stage: even index LWA, odd index LGA (the authors' 'mix_local_enhanced_vit')."""
        super().__init__()
        dpr = self._setup(in_chans, num_classes, embed_dim, depths, drop_path_rate, 4, img_size)
        self.stem = ConvStem(in_chans, embed_dim[0])
        stages = []
        for i in range(len(depths)):
            blocks = [L2ViTBlock(embed_dim[i], num_heads[i], is_global=j % 2 == 1, window_size=to_2tuple(window_size),
                                 mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=dpr[i][j])
                      for j in range(depths[i])]
            stages.append(Stage(blocks, NormConvDown(embed_dim[i - 1], embed_dim[i]) if i > 0 else None))
        self._finish(stages, nn.LayerNorm(self.num_features), self._classifier_head(global_pool, drop_rate),
                     trunc_normal_init_)

    def _resize(self, window_size=None) -> None:
        """Nothing is position-dependent except the window size of the LWA blocks."""
        if window_size is not None:
            for stage in self.stages:
                for block in stage.blocks:
                    if not block.is_global:
                        block.attn.set_window_size(to_2tuple(window_size), (0, 0))


def checkpoint_filter_fn(state_dict, model):
    """Authors' release (downsample_layers.i, stages.i.j, head) -> zoo layout."""
    if any(k.startswith('downsample_layers.') for k in state_dict):
        state_dict = rename(state_dict, [
            (r'^downsample_layers\.0\.proj\.proj\.', 'stem.proj.'),  # their ConvStem nests its Sequential
            (r'^downsample_layers\.0\.', 'stem.'),
            (r'^downsample_layers\.(\d+)\.', r'stages.\1.downsample.'),
            (r'^stages\.(\d+)\.(\d+)\.', r'stages.\1.blocks.\2.'),
            (r'^head\.(weight|bias)$', r'head.fc.\1'),
        ])
    return state_dict


def _create(variant: str, pretrained: bool = False, **kwargs):
    return build_model(L2ViT, variant, pretrained, num_stages=len(kwargs.get('depths', (2, 2, 6, 2))),
                       checkpoint_filter=checkpoint_filter_fn, **kwargs)


_URL = 'https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/'
_CFG = dict(first_conv='stem.proj.0')  # the stem's first conv (timm adapts it for in_chans != 3)
default_cfgs = generate_default_cfgs(licensed('mit', {
    'zoo_l2vit_tiny.in1k': cfg(_URL + 'L2ViT-Tiny-checkpoint-best-ema.pth', **_CFG),
    'zoo_l2vit_small.in1k': cfg(_URL + 'L2ViT-Small-checkpoint-best-ema.pth', **_CFG),
    'zoo_l2vit_base.in1k': cfg(_URL + 'L2ViT-Base-checkpoint-best-ema.pth', **_CFG),
    'zoo_l2vit_base.in22k_ft_in1k': cfg(_URL + 'L2ViT-Base-22k21k-finetune-224-checkpoint-best.pth', **_CFG),
    'zoo_l2vit_base_384.in22k_ft_in1k': cfg(_URL + 'L2ViT-Base-22k21k-finetune-384-checkpoint-best.pth',
                                           input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0,
                                           **_CFG),
}))

# the authors' models/l2vit.py: conv stem '2L', blocks 'mix_local_enhanced_vit', window 7 (12 at 384);
# drop_path from the readme commands where given (B: 0.3 on IN-1K)
L2VIT_VARIANTS = {
    'zoo_l2vit_tiny': dict(embed_dim=(96, 192, 384, 768), depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'zoo_l2vit_small': dict(embed_dim=(96, 192, 384, 768), depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'zoo_l2vit_base': dict(embed_dim=(128, 256, 512, 1024), depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                           drop_path_rate=0.3),
    'zoo_l2vit_base_384': dict(embed_dim=(128, 256, 512, 1024), depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                               img_size=384, window_size=12, drop_path_rate=0.2),
}

register_variants(_create, L2VIT_VARIANTS, __name__)
