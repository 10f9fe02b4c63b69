"""DaViT (Ding et al., ECCV 2022): dual attention. Each stage alternates a spatial block (multi-head attention
in 7x7 windows, no position bias) and a channel block (channel group attention, global at linear cost);
both have a conditional (depthwise conv) position encoding before the attention and before the MLP.

Any input size: windows are padded, padded keys masked and the map cropped back (at window-multiple sizes,
e.g. 224, nothing is padded and outputs equal timm's `davit_*`).
Checkpoints: the official release (dingmyu/davit: patch_embeds / main_blocks / cpe.0 / norms / head) and
timm's `davit_*` weights both load.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d, NormMlpClassifierHead
from timm.models import generate_default_cfgs
from timm.models.vision_transformer import init_weights_vit_timm

from ..layers.attention.channel import ChannelAttention
from ..layers.attention.window import WindowAttention
from ..layers.cpe import ConvPosEnc
from ..layers.metaformer import MetaFormerBlock
from ..layers.residual import residual
from ._base import Backbone, Stage
from ._builder import build_model, cfg, licensed, register_variants
from ._convert import rename

__all__ = ['DaViT', 'DaViTBlock']


class DaViTBlock(MetaFormerBlock):
    """cpe1 -> x + mixer(norm1(x)) -> cpe2 -> x + mlp(norm2(x)), on (B, H, W, C) maps."""

    def __init__(self, dim: int, mixer: nn.Module, norm_layer: Callable, mlp_ratio: float = 4.,
                 drop_path: float = 0.):
        super().__init__(dim, mixer, norm_layer, mlp_ratio, drop_path=drop_path)
        self.cpe1 = ConvPosEnc(dim)
        self.cpe2 = ConvPosEnc(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe1(x)
        x = residual(x, lambda t: self.drop_path(self.mixer(self.norm1(t))))
        x = self.cpe2(x)
        return residual(x, lambda t: self.drop_path(self.mlp(self.norm2(t))))


class _Stem(nn.Module):
    """7x7 stride-4 conv (padding 3) -> LayerNorm: (B, C, H, W) -> (B, ceil(H / 4), ceil(W / 4), D)."""

    def __init__(self, in_chs: int, out_chs: int, norm_layer: Callable):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 7, stride=4, padding=3)
        self.norm = norm_layer(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, (-x.shape[3]) % 4, 0, (-x.shape[2]) % 4))
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class _Downsample(nn.Module):
    """LayerNorm -> 2x2 stride-2 conv on (B, H, W, C) maps, odd sides padded at the bottom / right."""

    def __init__(self, in_chs: int, out_chs: int, norm_layer: Callable):
        super().__init__()
        self.norm = norm_layer(in_chs)
        self.conv = nn.Conv2d(in_chs, out_chs, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x).permute(0, 3, 1, 2)
        x = F.pad(x, (0, x.shape[3] % 2, 0, x.shape[2] % 2))
        return self.conv(x).permute(0, 2, 3, 1)


class _Head(NormMlpClassifierHead):
    """timm's NormMlpClassifierHead (pool -> LayerNorm -> fc) fed channels-last maps; unpooled (global_pool '')
    it returns them channels-last too, the layout of forward_features."""

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = super().forward(x.permute(0, 3, 1, 2), pre_logits=pre_logits)
        return x if x.ndim == 2 else x.permute(0, 2, 3, 1)


class DaViT(Backbone):
    output_fmt = 'NHWC'

    def __init__(
            self,
            img_size: int = 224,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: Sequence[int] = (96, 192, 384, 768),
            depths: Sequence[int] = (1, 1, 3, 1),
            num_heads: Sequence[int] = (3, 6, 12, 24),
            window_size: int = 7,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            norm_eps: float = 1e-5,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.1,
    ):
        """depths count dual blocks (one spatial + one channel block each)."""
        super().__init__()
        dpr = self._setup(in_chans, num_classes, embed_dim, depths, drop_path_rate, 4)  # nothing reads img_size
        norm = partial(nn.LayerNorm, eps=norm_eps)
        self.stem = _Stem(in_chans, embed_dim[0], norm)
        stages = []
        for i, (dim, depth, heads) in enumerate(zip(embed_dim, depths, num_heads)):
            blocks = [nn.Sequential(
                DaViTBlock(dim, WindowAttention(dim, heads, window_size, qkv_bias=qkv_bias, rel_pos_bias=False),
                           norm, mlp_ratio, drop_path=dpr[i][j]),
                DaViTBlock(dim, ChannelAttention(dim, heads, qkv_bias=qkv_bias), norm, mlp_ratio, drop_path=dpr[i][j]),
            ) for j in range(depth)]
            stages.append(Stage(blocks, _Downsample(embed_dim[i - 1], dim, norm) if i > 0 else None))
        # no final norm: the head norms after pooling
        head = _Head(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                     norm_layer=partial(LayerNorm2d, eps=norm_eps))
        self._finish(stages, nn.Identity(), head, init_weights_vit_timm)


# --- checkpoints -----------------------------------------------------------------------------------------
_ZOO_FROM_OFFICIAL = [  # dingmyu/davit -> timm names
    (r'^patch_embeds\.0\.proj\.', 'stem.conv.'),
    (r'^patch_embeds\.0\.norm\.', 'stem.norm.'),
    (r'^patch_embeds\.(\d+)\.proj\.', r'stages.\1.downsample.conv.'),
    (r'^patch_embeds\.(\d+)\.norm\.', r'stages.\1.downsample.norm.'),
    (r'^main_blocks\.(\d+)\.', r'stages.\1.blocks.'),
    (r'\.cpe\.0\.', '.cpe1.'),
    (r'\.cpe\.1\.', '.cpe2.'),
    (r'^norms\.', 'head.norm.'),
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
]


def checkpoint_filter_fn(state_dict, model):
    """Official DaViT release or timm `davit_*` -> zoo layout (zoo checkpoints pass through)."""
    if 'patch_embeds.0.proj.weight' in state_dict:
        state_dict = rename(state_dict, _ZOO_FROM_OFFICIAL)
    return rename(state_dict, [(r'(blocks\.\d+\.\d+)\.attn\.', r'\1.mixer.')])


def _create(variant: str, pretrained: bool = False, **kwargs):
    return build_model(DaViT, variant, pretrained, num_stages=4, checkpoint_filter=checkpoint_filter_fn, **kwargs)


_URL = 'https://connecthkuhk-my.sharepoint.com/:u:/g/personal/u3007305_connect_hku_hk/'
_UNRELEASED = dict(crop_pct=1.0, first_conv='stem.conv')
default_cfgs = generate_default_cfgs(licensed('mit', {
    'zoo_davit_tiny.msft_in1k': cfg(_URL + 'EcJYlVYP9y5FsDbMP-nwjtABgLmdrNGZBxgR5--Kg3MZ7Q?e=v9OrXB',
                                    crop_pct=.95, first_conv='stem.conv'),
    'zoo_davit_small.msft_in1k': cfg(_URL + 'ERN_Gzm8oKdIvO01r0X2cscB_owuRAnnQPNGJEVGP23xHQ?e=MVW3ZO',
                                     crop_pct=.95, first_conv='stem.conv'),
    'zoo_davit_base.msft_in1k': cfg(_URL + 'Ea8kCpdM949CvTM0w7DWbGwBxxiACMSik4zx-emrNY0uKQ?e=aEjC7u',
                                    crop_pct=.95, first_conv='stem.conv'),
    # the paper's large models (L: IN-22K, fine-tuned at 384; H / G: 1.5B private images, fine-tuned at 512) have
    # no released weights, neither from the authors nor in timm (`davit_large/huge/giant` carry no tag); the tags
    # name the reported models
    'zoo_davit_large.in22k_ft_in1k': cfg('', input_size=(3, 384, 384), pool_size=(12, 12), **_UNRELEASED),
    'zoo_davit_huge.ft_in1k': cfg('', input_size=(3, 512, 512), pool_size=(16, 16), **_UNRELEASED),
    'zoo_davit_giant.ft_in1k': cfg('', input_size=(3, 512, 512), pool_size=(16, 16), **_UNRELEASED),
}))

# variants as data: the paper's Table 1 (dual-block depths, widths, heads = channel groups)
DAVIT_VARIANTS = {
    'zoo_davit_tiny': dict(embed_dim=(96, 192, 384, 768), depths=(1, 1, 3, 1), num_heads=(3, 6, 12, 24)),
    'zoo_davit_small': dict(embed_dim=(96, 192, 384, 768), depths=(1, 1, 9, 1), num_heads=(3, 6, 12, 24)),
    'zoo_davit_base': dict(embed_dim=(128, 256, 512, 1024), depths=(1, 1, 9, 1), num_heads=(4, 8, 16, 32)),
    'zoo_davit_large': dict(embed_dim=(192, 384, 768, 1536), depths=(1, 1, 9, 1), num_heads=(6, 12, 24, 48)),
    'zoo_davit_huge': dict(embed_dim=(256, 512, 1024, 2048), depths=(1, 1, 9, 1), num_heads=(8, 16, 32, 64)),
    'zoo_davit_giant': dict(embed_dim=(384, 768, 1536, 3072), depths=(1, 1, 12, 3), num_heads=(12, 24, 48, 96)),
}

register_variants(_create, DAVIT_VARIANTS, __name__)
