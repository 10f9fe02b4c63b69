"""ConViT (d'Ascoli et al., ICML 2021): an isotropic DeiT whose first blocks use gated positional
self-attention (GPSA, a soft convolutional inductive bias); the class token joins after them and the last
blocks are plain multi-head self-attention. Built as a configuration of the DeiT host (`deit.DeiT`), which
holds the isotropic backbone contract.

Isotropic backbone: every block is a feature level at stride 16. `forward_intermediates` returns the chosen
blocks' patch tokens as NCHW (or NHWC) maps (the class token removed), or the raw token sequence with
output_fmt='NLC'; `features_only=True` defaults to blocks (2, 5, 8, 11). Any input size: the image is padded
to a patch multiple, the absolute position embedding is resampled to the patch grid and GPSA's offsets are
computed for that grid (outputs equal timm's `convit_*` at 224, where nothing changes).
Checkpoints: the official release (facebookresearch/convit) and timm's `convit_*` weights both load (their
key names are the zoo's but for `patch_embed` -> `stem` and `head` -> `head.fc`).
"""
from __future__ import annotations

from functools import partial
from typing import Any

import torch.nn as nn
from timm.models import generate_default_cfgs
from timm.models.vision_transformer import init_weights_vit_timm

from ..layers.attention.gpsa import GPSA
from ._builder import build_model, cfg, licensed, register_variants
from ._convert import rename
from .deit import DeiT, resize_deit_pos_embed

__all__ = ['ConViT']


class ConViT(DeiT):
    """The DeiT host configured as ConViT: GPSA mixers in the first `local_up_to_layer` blocks (on patch tokens),
    the class token inserted after them, plain MHSA after; the position embedding covers the patch tokens only."""
    _init_weights = staticmethod(init_weights_vit_timm)  # the released init (also resets convs and norms)

    def __init__(
            self,
            embed_dim: int = 768,
            depth: int = 12,
            num_heads: int = 16,
            local_up_to_layer: int = 10,
            locality_strength: float = 1.,
            qkv_bias: bool = False,
            norm_eps: float = 1e-6,
            pos_drop_rate: float = 0.,
            drop_path_rate: float = 0.1,
            **kwargs: Any,
    ):
        """
        Args:
            embed_dim: token width (48 x heads in the paper's variants).
            local_up_to_layer: number of leading GPSA blocks; the class token is inserted after them.
            locality_strength: scale of GPSA's locality init.
            kwargs: the DeiT host's (img_size, patch_size, in_chans, num_classes, global_pool, mlp_ratio,
                drop_rate, proj_drop_rate, attn_drop_rate).
        """
        gpsa_args = dict(mixer_layer=GPSA, locality_strength=locality_strength)
        super().__init__(
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, qkv_bias=qkv_bias,
            norm_layer=partial(nn.LayerNorm, eps=norm_eps), pos_drop_rate=pos_drop_rate, drop_path_rate=drop_path_rate,
            mixer_args=[gpsa_args if i < local_up_to_layer else {} for i in range(depth)],
            cls_token_at=local_up_to_layer, no_embed_class=True, **kwargs)
        self.local_up_to_layer = local_up_to_layer
        for m in self.modules():
            if isinstance(m, GPSA):
                m.local_init()


# --- checkpoints -----------------------------------------------------------------------------------------
def checkpoint_filter_fn(state_dict, model):
    """Official ConViT release ({'model': sd} or a bare sd), timm `convit_*`, or the zoo's earlier layout (mixers
    under `blocks.N.mixer.`) -> zoo layout; the position embedding is resampled to the model's grid."""
    state_dict = rename(state_dict, [
        (r'^patch_embed\.', 'stem.'),
        (r'^(blocks\.\d+)\.mixer\.', r'\1.attn.'),
        (r'^head\.(weight|bias)$', r'head.fc.\1'),
    ])
    return resize_deit_pos_embed(state_dict, model)


def _create(variant: str, pretrained: bool = False, **kwargs):
    kwargs.setdefault('out_indices', (2, 5, 8, 11))
    return build_model(ConViT, variant, pretrained, num_stages=kwargs.get('depth', 12),
                       checkpoint_filter=checkpoint_filter_fn, **kwargs)


_URL = 'https://dl.fbaipublicfiles.com/convit/'
_CFG = dict(pool_size=None, crop_pct=.875, interpolation='bicubic', first_conv='stem.proj', classifier='head.fc')
default_cfgs = generate_default_cfgs(licensed('apache-2.0', {
    **{f'zoo_convit_{size}.fb_in1k': cfg(_URL + f'convit_{size}.pth', **_CFG) for size in ('tiny', 'small', 'base')},
    # the wider "+" models: the paper reports them, the authors released no weights (their main.py builds them
    # with --embed_dim 64), timm has no `convit_*_plus`
    **{f'zoo_convit_{size}_plus.fb_in1k': cfg('', **_CFG) for size in ('tiny', 'small', 'base')},
}))

# variants as data: the paper's Table 1 (heads; width = 48 x heads, the "+" models 64 x heads; 10 GPSA blocks then
# 2 MHSA blocks)
CONVIT_VARIANTS = {
    f'zoo_convit_{size}{plus}': dict(embed_dim=head_dim * heads, num_heads=heads, depth=12, local_up_to_layer=10)
    for plus, head_dim in (('', 48), ('_plus', 64))
    for size, heads in (('tiny', 4), ('small', 9), ('base', 16))
}

register_variants(_create, CONVIT_VARIANTS, __name__)
