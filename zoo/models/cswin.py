"""CSWin Transformer (Dong et al., CVPR 2022): cross-shaped window self-attention with LePE in a 4-stage hierarchy.

A 7x7 stride-4 conv stem (+ LayerNorm), stages of pre-norm blocks (token mixer, MLP ratio 4) joined by 3x3
stride-2 conv merges (+ LayerNorm), stripe widths 1-2-7 (224) or 1-2-12 (384) in stages 1-3 and global
attention in the last stage. The host takes its token mixer as an argument (CSWinAttention by default), so
InLine-CSWin (zoo/models/inline.py) is this host with InLine attention in some blocks.

Any input size: the stem and merges give ceil(H / 4), ceil(H / 8), ... maps (the authors' sizes wherever
theirs run), and each stripe branch pads inside to a multiple of its width and crops back (the authors'
segmentation backbone's padding, see zoo/layers/attention/cswin.py). CSWin itself has no size-dependent state;
hybrid mixers that do (Agent-CSWin's bias terms) are built for the maps at `img_size` and resampled by
`set_input_size`.
Checkpoints: the authors' release (microsoft/CSWin-Transformer) loads strictly through the filter below.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Optional, Sequence, Tuple

from timm.models import generate_default_cfgs

from ..layers import CSWinAttention
from ..layers.downsample import ConvDownsample
from ._builder import build_model, cfg, register_variants
from ._convert import rename
from ._hosts import MixerHost

__all__ = ['CSWin', 'checkpoint_filter_fn', 'cswin_rename']


class CSWin(MixerHost):
    def __init__(self, embed_dim: int = 64, depths: Sequence[int] = (1, 2, 21, 1),
                 num_heads: Sequence[int] = (2, 4, 8, 16), split_size: Sequence[Optional[int]] = (1, 2, 7, None),
                 mixer_layer: Callable = CSWinAttention, **kwargs):
        """
        Args:
            split_size: stripe width per stage; None = global attention (the authors' last stage, whatever its
                configured width).
            mixer_layer: the token mixer, called as mixer_layer(dim=, num_heads=, window_size=<the stage's map at
                the built size>, shift_size=(0, 0), qkv_bias=, attn_drop=, proj_drop=, split_size=<the stage's>,
                **args) (see zoo/models/_hosts.py MapBlock).
            **kwargs: the host's (MixerHost): img_size, mlp_ratio, drop rates, mixer_args (per stage, a dict of extra
                mixer arguments or a list of one dict per block; a dict that names its own `mixer_layer` gets only
                its own arguments, no split_size: hybrids such as InLine-CSWin stay this host), ...
        """
        self.split_size = tuple(split_size)
        super().__init__(embed_dim=embed_dim, depths=depths, num_heads=num_heads, mixer_layer=mixer_layer, **kwargs)

    def _stem(self, in_chans, dim, feat_size, norm_layer, drop_rate):
        return ConvDownsample(in_chans, dim, 7, 4, 2, norm_layer=norm_layer, output_fmt='NHWC')

    def _downsample(self, in_dim, out_dim, feat_size, norm_layer, drop_rate):
        return ConvDownsample(in_dim, out_dim, 3, 2, 1, norm_layer=norm_layer, input_fmt='NHWC', output_fmt='NHWC')

    def _mixer_kwargs(self, stage):
        return dict(split_size=self.split_size[stage])

    def _resize(self) -> None:
        """Mixers with position terms sized for their stage's map (Agent-CSWin's) are resampled to
        `self.img_size`; CSWin's stripes need nothing (they pad at any size)."""
        for stage, feat_size in zip(self.stages, self._stage_sizes()):
            for block in stage.blocks:
                block.set_input_size(feat_size, feat_size)


# --- checkpoints -----------------------------------------------------------------------------------------
# the authors' keys -> zoo's:
#   stage1_conv_embed.{0,2}          -> stem.{proj,norm}
#   stage{s}.{j}.{qkv,proj}          -> stages.{s-1}.blocks.{j}.attn.{qkv,proj}
#   stage{s}.{j}.attns.{b}.get_v     -> stages.{s-1}.blocks.{j}.attn.lepe.{b}
#   stage{s}.{j}.{norm1,norm2,mlp}   -> stages.{s-1}.blocks.{j}.{norm1,norm2,mlp}
#   merge{s}.{conv,norm}             -> stages.{s}.downsample.{proj,norm}
#   head                             -> head.fc
def cswin_rename(state_dict, global_mixer: Optional[Tuple[str, Dict[str, str]]] = None):
    """The authors' CSWin layout -> zoo's.

    global_mixer = (marker, renames): the hybrids' (InLine-, Agent-CSWin) blocks whose single branch attns.0 has
    a key containing `marker` hold another mixer; their attns.0.<name> become attn.<renames.get(name, name)>.
    """
    if global_mixer is not None:
        marker, renames = global_mixer
        blocks = sorted({k.split('.attns.')[0] for k in state_dict if f'.attns.0.{marker}' in k})
        if blocks:
            state_dict = rename(state_dict, [(
                r'^(' + '|'.join(map(re.escape, blocks)) + r')\.attns\.0\.([a-z_]+)',
                lambda m: f'{m.group(1)}.attn.{renames.get(m.group(2), m.group(2))}')])
    return rename(state_dict, [
        (r'^stage1_conv_embed\.0\.', 'stem.proj.'),
        (r'^stage1_conv_embed\.2\.', 'stem.norm.'),
        (r'^merge(\d)\.conv\.', r'stages.\1.downsample.proj.'),
        (r'^merge(\d)\.norm\.', r'stages.\1.downsample.norm.'),
        (r'^stage(\d)\.(\d+)\.', lambda m: f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.'),
        (r'\.blocks\.(\d+)\.(qkv|proj)\.', r'.blocks.\1.attn.\2.'),
        (r'\.attns\.(\d)\.get_v\.', r'.attn.lepe.\1.'),
        (r'^head\.(weight|bias)$', r'head.fc.\1'),
    ])


def checkpoint_filter_fn(state_dict, model):
    """The authors' CSWin release -> zoo layout (zoo checkpoints pass through)."""
    if any(k.startswith('stages.') for k in state_dict):
        return state_dict
    return cswin_rename(state_dict)


def _create(variant: str, pretrained: bool = False, **kwargs):
    return build_model(CSWin, variant, pretrained, num_stages=len(kwargs.get('depths', (1, 2, 21, 1))),
                       checkpoint_filter=checkpoint_filter_fn, **kwargs)


_URL = 'https://github.com/microsoft/CSWin-Transformer/releases/download/v0.1.0/'
_MIT = dict(license='mit')
_384 = dict(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0)
default_cfgs = generate_default_cfgs({
    'zoo_cswin_tiny.in1k': cfg(_URL + 'cswin_tiny_224.pth', **_MIT),
    'zoo_cswin_small.in1k': cfg(_URL + 'cswin_small_224.pth', **_MIT),
    'zoo_cswin_base.in1k': cfg(_URL + 'cswin_base_224.pth', **_MIT),
    'zoo_cswin_large.in22k_ft_in1k': cfg(_URL + 'cswin_large_224.pth', **_MIT),
    'zoo_cswin_large.in22k': cfg(_URL + 'cswin_large_22k_224.pth', num_classes=21841, **_MIT),
    'zoo_cswin_base_384.in1k': cfg(_URL + 'cswin_base_384.pth', **_384, **_MIT),
    'zoo_cswin_large_384.in22k_ft_in1k': cfg(_URL + 'cswin_large_384.pth', **_384, **_MIT),
})

# the authors' models/cswin.py (CSWin_{dim}_{depths}_{size}): stripe widths 1-2-7 at 224, 1-2-12 at 384, stage 4
# global; drop_path from their README's commands (T 0.2, S 0.4, B 0.5, B-384 fine-tuned with 0.7, L with 0.2)
CSWIN_WIDTHS = {
    'tiny': dict(embed_dim=64, num_heads=(2, 4, 8, 16)),
    'small': dict(embed_dim=64, num_heads=(2, 4, 8, 16)),
    'base': dict(embed_dim=96, num_heads=(4, 8, 16, 32)),
    'large': dict(embed_dim=144, num_heads=(6, 12, 24, 24)),
}
_T = dict(**CSWIN_WIDTHS['tiny'], depths=(1, 2, 21, 1))
_S = dict(**CSWIN_WIDTHS['small'], depths=(2, 4, 32, 2))
_B = dict(**CSWIN_WIDTHS['base'], depths=(2, 4, 32, 2))
_L = dict(**CSWIN_WIDTHS['large'], depths=(2, 4, 32, 2))
SPLIT_224, SPLIT_384 = (1, 2, 7, None), (1, 2, 12, None)
CSWIN_VARIANTS = {
    'zoo_cswin_tiny': dict(**_T, split_size=SPLIT_224, drop_path_rate=0.2),
    'zoo_cswin_small': dict(**_S, split_size=SPLIT_224, drop_path_rate=0.4),
    'zoo_cswin_base': dict(**_B, split_size=SPLIT_224, drop_path_rate=0.5),
    'zoo_cswin_large': dict(**_L, split_size=SPLIT_224, drop_path_rate=0.2),
    'zoo_cswin_base_384': dict(**_B, split_size=SPLIT_384, img_size=384, drop_path_rate=0.7),
    'zoo_cswin_large_384': dict(**_L, split_size=SPLIT_384, img_size=384, drop_path_rate=0.2),
}

register_variants(_create, CSWIN_VARIANTS, __name__)
