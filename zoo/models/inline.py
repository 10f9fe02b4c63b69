"""InLine attention (Han et al., "Bridging the Divide: Reconsidering Softmax and Linear Attention", NeurIPS 2024).

The injective linear attention mixer (zoo/layers/attention/inline.py) composed into the authors' hosts:
InLine-Swin = the Swin host with global InLine attention in the first blocks (per the authors' ATTN_TYPE)
and Swin window attention elsewhere; InLine-CSWin = the CSWin host with global InLine attention (plus CSWin's
LePE) in its first two stages and cross-shaped window attention in the others.
Checkpoints: the authors' release (LeapLabTHU/InLine, {'model': state_dict} in the official Swin layout plus
the InLine parameters) loads strictly. InLine itself has no position-dependent parameters; the window
attention blocks' relative position tables are resampled by the Swin filter.
"""
from __future__ import annotations

from typing import Optional, Sequence

from timm.models import generate_default_cfgs

from ..layers import InLineAttention
from . import cswin, deit, pvt, swin
from ._builder import build_model, cfg, licensed, register_variants
from ._hybrid import HYBRID_CSWIN_SIZES, HYBRID_SWIN_SIZES, hybrid_swin_args

__all__ = ['checkpoint_filter_swin', 'checkpoint_filter_pvt', 'checkpoint_filter_deit', 'checkpoint_filter_cswin']


# the authors' InLine-Swin release is the official Swin layout plus the InLine terms (no position-dependent ones)
checkpoint_filter_swin = swin.checkpoint_filter_fn


def checkpoint_filter_pvt(state_dict, model):
    """Authors' InLine-PVT release -> zoo PVT layout; position embeddings resampled."""
    return pvt.resize_pos_embeds(pvt.pvt_rename(state_dict), model)


def _create_pvt(variant: str, pretrained: bool = False, depths: Sequence[int] = (2, 2, 2, 2), **kwargs):
    return build_model(pvt.PVT, variant, pretrained, num_stages=len(depths), checkpoint_filter=checkpoint_filter_pvt,
                       depths=depths, mixer_layer=InLineAttention, **kwargs)


def checkpoint_filter_deit(state_dict, model):
    """Authors' InLine-DeiT release -> zoo DeiT layout; position embedding resampled."""
    return deit.resize_deit_pos_embed(deit.deit_rename(state_dict), model)


def _create_deit(variant: str, pretrained: bool = False, **kwargs):
    return build_model(deit.DeiT, variant, pretrained, num_stages=3, checkpoint_filter=checkpoint_filter_deit,
                       mixer_layer=InLineAttention, **kwargs)


def _create_swin(variant: str, pretrained: bool = False, depths: Sequence[int] = (2, 2, 6, 2),
                 global_blocks: Sequence[int] = (2, 2, 6, 0), img_size=224, patch_size: int = 4, window_size=None,
                 **kwargs):
    args = hybrid_swin_args(depths, global_blocks, InLineAttention, img_size=img_size, patch_size=patch_size,
                            window_size=window_size)
    return build_model(swin.Swin, variant, pretrained, num_stages=len(depths),
                       checkpoint_filter=checkpoint_filter_swin, **args, **kwargs)


def checkpoint_filter_cswin(state_dict, model):
    """Authors' InLine-CSWin release (the CSWin layout; an InLine block has one branch, attns.0, with the InLine
    residual next to get_v) -> zoo CSWin layout: the InLineAttention's residual and lepe."""
    if any(k.startswith('stages.') for k in state_dict):
        return state_dict
    return cswin.cswin_rename(state_dict, global_mixer=('residual.', {'get_v': 'lepe'}))


def _create_cswin(variant: str, pretrained: bool = False, depths: Sequence[int] = (2, 4, 18, 1),
                  inline_blocks: Optional[Sequence[int]] = None, **kwargs):
    """inline_blocks[i]: leading blocks of stage i with InLine attention (default: all of stages 1-2, the
    authors' ATTN_TYPE 'IISS'); they are global at any size (the authors' CSWIN_LA_SPLIT_SIZE is each stage's
    map at the trained size)."""
    inline_blocks = inline_blocks if inline_blocks is not None else (depths[0], depths[1]) + (0,) * (len(depths) - 2)
    inline = dict(mixer_layer=InLineAttention, lepe_kernel=3, kernel_from_block_input=True)
    mixer_args = [[dict(inline) if j < inline_blocks[i] else {} for j in range(d)] for i, d in enumerate(depths)]
    return build_model(cswin.CSWin, variant, pretrained, num_stages=len(depths),
                       checkpoint_filter=checkpoint_filter_cswin, depths=depths, mixer_args=mixer_args, **kwargs)


_URL = 'https://cloud.tsinghua.edu.cn/f/{}/?dl=1'
default_cfgs = generate_default_cfgs(licensed('unspecified', {
    'zoo_inline_swin_tiny.in1k': cfg(_URL.format('32810869fcc34410966b')),
    'zoo_inline_swin_small.in1k': cfg(_URL.format('e9657fd247c04c7cb1a1')),
    'zoo_inline_swin_base.in1k': cfg(_URL.format('bf23564bb64c420aafe1')),
    # cfgs/inline_swin_b_384.yaml exists, its weights are not in the authors' release table
    'zoo_inline_swin_base_384.in1k': cfg('', input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0),
    'zoo_inline_pvt_tiny.in1k': cfg(_URL.format('90ac52b1555b401eb5e6')),
    'zoo_inline_pvt_small.in1k': cfg(_URL.format('1ab953b2479d433080a3')),
    'zoo_inline_pvt_medium.in1k': cfg(_URL.format('a72aec31e6084bc0a280')),
    'zoo_inline_pvt_large.in1k': cfg(_URL.format('efd91318ba964f01b288')),
    'zoo_inline_deit_tiny.in1k': cfg(_URL.format('1d6b8191ad6d4114b291'), pool_size=None),
    'zoo_inline_deit_small.in1k': cfg(_URL.format('2f3898b07e9247f3beb3'), input_size=(3, 288, 288), pool_size=None),
    'zoo_inline_deit_base.in1k': cfg(_URL.format('10bdd726d4b0435eb34e'), input_size=(3, 448, 448), pool_size=None),
    'zoo_inline_cswin_tiny.in1k': cfg(_URL.format('49fa2ecc543647c4b970')),
    'zoo_inline_cswin_small.in1k': cfg(_URL.format('59f4e65f776f4052b93c')),
    'zoo_inline_cswin_base.in1k': cfg(_URL.format('91e17121df284ae38521')),
}))

# the authors' cfgs/inline_swin_*.yaml (HYBRID_SWIN_SIZES)
INLINE_SWIN_VARIANTS = {
    'zoo_inline_swin_tiny': HYBRID_SWIN_SIZES['tiny'],
    'zoo_inline_swin_small': HYBRID_SWIN_SIZES['small'],
    'zoo_inline_swin_base': HYBRID_SWIN_SIZES['base'],
    'zoo_inline_swin_base_384': dict(HYBRID_SWIN_SIZES['base'], img_size=384),
}

register_variants(_create_swin, INLINE_SWIN_VARIANTS, __name__)

# the authors' models/inline_pvt.py + cfgs/inline_pvt_*.yaml: PVT-v1 widths with twice the heads, InLine attention
# in every stage (IIII, no spatial reduction), no final norm
_PVT = dict(embed_dim=(64, 128, 320, 512), num_heads=(2, 4, 10, 16), mlp_ratios=(8, 8, 4, 4))
INLINE_PVT_VARIANTS = {f'zoo_inline_pvt_{size}': dict(_PVT, **args) for size, args in pvt.PVT_SIZES.items()}
register_variants(_create_pvt, INLINE_PVT_VARIANTS, __name__)

# the authors' models/inline_deit.py + cfgs/inline_deit_*.yaml: own widths (not DeiT-S/B's), InLine in every block,
# S trained at 288 and B at 448; drop_path 0.1 (config default)
INLINE_DEIT_VARIANTS = {
    'zoo_inline_deit_tiny': dict(embed_dim=192, num_heads=6, drop_path_rate=0.1),
    'zoo_inline_deit_small': dict(embed_dim=320, num_heads=10, img_size=288, drop_path_rate=0.1),
    'zoo_inline_deit_base': dict(embed_dim=384, num_heads=12, img_size=448, drop_path_rate=0.1),
}
register_variants(_create_deit, INLINE_DEIT_VARIANTS, __name__)

# the authors' models/inline_cswin.py + cfgs/inline_cswin_*.yaml (HYBRID_CSWIN_SIZES): ATTN_TYPE IISS, stripe widths
# 1-2-7 at 224 (stage 4 global)
INLINE_CSWIN_VARIANTS = {
    'zoo_inline_cswin_tiny': HYBRID_CSWIN_SIZES['tiny'],
    'zoo_inline_cswin_small': HYBRID_CSWIN_SIZES['small'],
    'zoo_inline_cswin_base': HYBRID_CSWIN_SIZES['base'],
}
register_variants(_create_cswin, INLINE_CSWIN_VARIANTS, __name__)
