"""Agent attention (Han et al., "Agent Attention: On the Integration of Softmax and Linear Attention", ECCV 2024).

The agent mixer (zoo/layers/attention/agent.py) composed into the hosts the authors release:
Agent-Swin = the Swin host with global agent attention in the first blocks (per the authors' ATTN_TYPE) and
Swin window attention elsewhere; Agent-CSWin = the CSWin host with global agent attention in its first two stages
(the agent mixer's depthwise conv of V is the authors' get_v) and cross-shaped window attention in the others.
Checkpoints: the authors' release (LeapLabTHU/Agent-Attention, {'model': state_dict} in the official Swin
layout plus the agent parameters) loads strictly; the position-dependent agent terms are resampled when
the model is built for another size than the checkpoint.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

from timm.models import generate_default_cfgs

from ..layers import AgentAttention, resize_agent_biases
from . import cswin, deit, pvt, swin
from ._builder import build_model, cfg, licensed, register_variants
from ._convert import note_resampled
from ._hybrid import HYBRID_CSWIN_SIZES, HYBRID_SWIN_SIZES, hybrid_swin_args

__all__ = ['resize_agent_tables', 'checkpoint_filter_swin', 'checkpoint_filter_pvt', 'checkpoint_filter_deit',
           'checkpoint_filter_cswin']

_GRID_BIASES = ('ah_bias', 'aw_bias', 'ha_bias', 'wa_bias')


def resize_agent_tables(state_dict, model):
    """Resample the agents' row/column bias terms to the size each AgentAttention of `model` is built for
    (another agent count or head count still fails the fit check, with the shapes named)."""
    own = model.state_dict()
    for k, v in state_dict.items():
        module_name, _, name = k.rpartition('.')
        if name in _GRID_BIASES and k in own and own[k].shape != v.shape and own[k].ndim == v.ndim:
            state_dict[k] = resize_agent_biases({name: v}, model.get_submodule(module_name).window_size)[name]
            note_resampled(k, v, state_dict[k])
    return state_dict


def checkpoint_filter_swin(state_dict, model):
    """Authors' Agent-Swin release (official Swin layout + agent terms) -> zoo Swin layout."""
    return resize_agent_tables(swin.checkpoint_filter_fn(state_dict, model), model)


def checkpoint_filter_pvt(state_dict, model):
    """Authors' Agent-PVT release -> zoo PVT layout; position embeddings and agent terms resampled."""
    return resize_agent_tables(pvt.resize_pos_embeds(pvt.pvt_rename(state_dict), model), model)


def checkpoint_filter_deit(state_dict, model):
    """Authors' Agent-DeiT release -> zoo DeiT layout; position embedding and agent terms resampled."""
    return resize_agent_tables(deit.resize_deit_pos_embed(deit.deit_rename(state_dict), model), model)


def _agent_args(agent_num: Sequence[int], agent_shapes: Optional[Sequence[Sequence[int]]]):
    """Per-stage mixer arguments. agent_shapes: the agent grid per stage for dense prediction, e.g. the authors'
    ((9, 9), (12, 12), (14, 14), (7, 7)) for Agent-Swin detection (None: the trained p x p grids)."""
    agent_shapes = agent_shapes or [None] * len(agent_num)
    return [dict(agent_num=a, agent_shape=s) for a, s in zip(agent_num, agent_shapes)]


def _create_swin(variant: str, pretrained: bool = False, depths: Sequence[int] = (2, 2, 6, 2),
                 global_blocks: Sequence[int] = (2, 2, 6, 0), agent_num: Sequence[int] = (9, 16, 49, 49),
                 agent_shapes=None, img_size=224, patch_size: int = 4, window_size=None, **kwargs):
    args = hybrid_swin_args(depths, global_blocks, AgentAttention, _agent_args(agent_num, agent_shapes),
                            img_size=img_size, patch_size=patch_size, window_size=window_size)
    return build_model(swin.Swin, variant, pretrained, num_stages=len(depths),
                       checkpoint_filter=checkpoint_filter_swin, **args, **kwargs)


def _create_pvt(variant: str, pretrained: bool = False, depths: Sequence[int] = (2, 2, 2, 2),
                agent_num: Sequence[int] = (9, 16, 49, 49), agent_shapes=None, **kwargs):
    return build_model(pvt.PVT, variant, pretrained, num_stages=len(depths), checkpoint_filter=checkpoint_filter_pvt,
                       depths=depths, mixer_layer=AgentAttention, mixer_args=_agent_args(agent_num, agent_shapes),
                       **kwargs)


def _create_deit(variant: str, pretrained: bool = False, depth: int = 12, agent_num: Union[int, Sequence[int]] = 49,
                 agent_blocks: int = 12, **kwargs):
    """agent_num: one number, or one per block; the first `agent_blocks` blocks use agent attention."""
    agent_num = [agent_num] * depth if isinstance(agent_num, int) else list(agent_num)
    mixer_args = [dict(mixer_layer=AgentAttention, agent_num=agent_num[i]) if i < agent_blocks else {}
                  for i in range(depth)]
    return build_model(deit.DeiT, variant, pretrained, num_stages=3, checkpoint_filter=checkpoint_filter_deit,
                       depth=depth, mixer_args=mixer_args, **kwargs)


def checkpoint_filter_cswin(state_dict, model):
    """Authors' Agent-CSWin release (the CSWin layout; an agent block has one branch, attns.0, with the agent bias
    terms next to get_v) -> zoo CSWin layout (get_v is the AgentAttention's dwc); agent terms resampled."""
    if not any(k.startswith('stages.') for k in state_dict):
        state_dict = cswin.cswin_rename(state_dict, global_mixer=('an_bias', {'get_v': 'dwc'}))
    return resize_agent_tables(state_dict, model)


def _create_cswin(variant: str, pretrained: bool = False, depths: Sequence[int] = (2, 4, 18, 1),
                  agent_num: Sequence[int] = (9, 16, 49, 49), agent_shapes=None, **kwargs):
    """Agent attention (global, sized for each stage's map at the built size) in every block of stages 1-2 (the
    authors' ATTN_TYPE 'AABB', CSWIN_LA_SPLIT_SIZE = those maps), CSWin attention in stages 3-4."""
    args = _agent_args(agent_num, agent_shapes)
    mixer_args = [[dict(mixer_layer=AgentAttention, **args[i]) if i < 2 else {} for _ in range(d)]
                  for i, d in enumerate(depths)]
    return build_model(cswin.CSWin, variant, pretrained, num_stages=len(depths),
                       checkpoint_filter=checkpoint_filter_cswin, depths=depths, mixer_args=mixer_args, **kwargs)


_URL = 'https://cloud.tsinghua.edu.cn/f/{}/?dl=1'
default_cfgs = generate_default_cfgs(licensed('unspecified', {
    'zoo_agent_swin_tiny.in1k': cfg(_URL.format('a2ddc1190c224f768a41')),
    'zoo_agent_swin_small.in1k': cfg(_URL.format('f607172c9fea4d6e99bb')),
    'zoo_agent_swin_base.in1k': cfg(_URL.format('4fcd2d0114bb490483c3')),
    'zoo_agent_swin_small_288.in1k': cfg(_URL.format('09760394e93b4046a25e'), input_size=(3, 288, 288),
                                         pool_size=(9, 9), crop_pct=1.0),
    'zoo_agent_swin_base_384.in1k': cfg(_URL.format('bb84ee9058954706a557'), input_size=(3, 384, 384),
                                        pool_size=(12, 12), crop_pct=1.0),
    'zoo_agent_pvt_tiny.in1k': cfg(_URL.format('13fdf0e0a7c5498c934f')),
    'zoo_agent_pvt_small.in1k': cfg(_URL.format('36b8be9a8863456685a3')),
    'zoo_agent_pvt_medium.in1k': cfg(_URL.format('4d00ecacf18b45f9b88c')),
    'zoo_agent_pvt_large.in1k': cfg(_URL.format('040cfe0cfbbe4762ad09')),
    'zoo_agent_deit_tiny.in1k': cfg(_URL.format('57e0904221824ee7b7af'), pool_size=None),
    'zoo_agent_deit_small.in1k': cfg(_URL.format('fdd43304372541db8ea7'), pool_size=None),
    'zoo_agent_deit_base.in1k': cfg(_URL.format('5115f15fdd7e4ab58fbc'), pool_size=None),
    'zoo_agent_cswin_tiny.in1k': cfg(_URL.format('8c562a74441e46d5902b')),
    'zoo_agent_cswin_small.in1k': cfg(_URL.format('30eb8af675bc4b7a8747')),
    'zoo_agent_cswin_base.in1k': cfg(_URL.format('c8035b0839b2410c8c9f')),
    'zoo_agent_cswin_base_384.in1k': cfg(_URL.format('1239be0df44b47719432'), input_size=(3, 384, 384),
                                         pool_size=(12, 12), crop_pct=1.0),
    # their yamls keep TEST.CROP (resize to 256/224 x size, centre crop), unlike the Swin / CSWin ones above
    'zoo_agent_pvt_medium_256.in1k': cfg(_URL.format('654df734121643b19c52'), input_size=(3, 256, 256),
                                         pool_size=(8, 8), crop_pct=.875),
    'zoo_agent_deit_small_448.in1k': cfg(_URL.format('a228f86241c445f1969b'), input_size=(3, 448, 448),
                                         pool_size=None, crop_pct=.875),
}))

# the authors' cfgs/agent_swin_*.yaml (HYBRID_SWIN_SIZES), agents 9-16-49-49
AGENT_SWIN_VARIANTS = {
    'zoo_agent_swin_tiny': HYBRID_SWIN_SIZES['tiny'],
    'zoo_agent_swin_small': HYBRID_SWIN_SIZES['small'],
    'zoo_agent_swin_base': HYBRID_SWIN_SIZES['base'],
    'zoo_agent_swin_small_288': dict(HYBRID_SWIN_SIZES['small'], img_size=288),
    'zoo_agent_swin_base_384': dict(HYBRID_SWIN_SIZES['base'], img_size=384),
}
AGENT_SWIN_VARIANTS = {name: dict(args, agent_num=(9, 16, 49, 49)) for name, args in AGENT_SWIN_VARIANTS.items()}

register_variants(_create_swin, AGENT_SWIN_VARIANTS, __name__)

# the authors' models/agent_pvt.py + cfgs/agent_pvt_*.yaml: PVT-v1 widths, agent attention in every stage (AAAA,
# no spatial reduction), no final norm
_PVT = dict(embed_dim=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), agent_num=(9, 16, 49, 49))
AGENT_PVT_VARIANTS = {f'zoo_agent_pvt_{size}': dict(_PVT, **args) for size, args in pvt.PVT_SIZES.items()}
AGENT_PVT_VARIANTS['zoo_agent_pvt_medium_256'] = dict(AGENT_PVT_VARIANTS['zoo_agent_pvt_medium'], img_size=256)
register_variants(_create_pvt, AGENT_PVT_VARIANTS, __name__)

# the authors' models/agent_deit.py + cfgs/agent_deit_*.yaml: DeiT widths; agents 49 (T, S) or 81 (B); B keeps
# agent attention in its first 4 blocks only (agent_layer=4)
AGENT_DEIT_VARIANTS = {
    'zoo_agent_deit_tiny': dict(embed_dim=192, num_heads=3, agent_num=49, drop_path_rate=0.0),
    'zoo_agent_deit_small': dict(embed_dim=384, num_heads=6, agent_num=49, drop_path_rate=0.1),
    'zoo_agent_deit_base': dict(embed_dim=768, num_heads=12, agent_num=81, agent_blocks=4, drop_path_rate=0.3),
    # cfgs/agent_deit_s_448.yaml sets no drop path: config.py's default 0.1
    'zoo_agent_deit_small_448': dict(embed_dim=384, num_heads=6, agent_num=49, img_size=448, drop_path_rate=0.1),
}
register_variants(_create_deit, AGENT_DEIT_VARIANTS, __name__)

# the authors' models/agent_cswin.py + cfgs/agent_cswin_*.yaml (HYBRID_CSWIN_SIZES),
# ATTN_TYPE AABB with agents 9-16; stripe widths 1-2-7 (224) / 1-2-12 (384), stage 4 global
AGENT_CSWIN_VARIANTS = {
    'zoo_agent_cswin_tiny': HYBRID_CSWIN_SIZES['tiny'],
    'zoo_agent_cswin_small': HYBRID_CSWIN_SIZES['small'],
    'zoo_agent_cswin_base': HYBRID_CSWIN_SIZES['base'],
    'zoo_agent_cswin_base_384': dict(HYBRID_CSWIN_SIZES['base'], img_size=384, split_size=cswin.SPLIT_384,
                                     drop_path_rate=0.7),
}
register_variants(_create_cswin, AGENT_CSWIN_VARIANTS, __name__)
