"""Every token mixer the zoo uses: functional cores with backends behind one dispatch, plus thin modules."""
from .dispatch import AttentionOp, force_backend, get_op, list_ops
from .dense import Attention, dense_attention
from .neighborhood import NeighborhoodAttention2D, na1d, na2d, na3d, neighborhood_attention
from .window import (
    RelativePositionBias, WindowAttention, WindowMixer, clamp_window, relative_position_index, window_mask,
    window_partition, window_reverse,
)
from .agent import AgentAttention, agent_attention, agent_position_biases, resize_agent_biases
from .inline import InLineAttention, dynamic_depthwise_conv, inline_attention
from .cswin import CSWinAttention, cswin_attention, stripe_attention
from .routing import AttentionLePE, BiLevelRoutingAttention, region_routing, routing_attention
from .hilo import HiLo, hifi_attention, lofi_attention
from .single_head import SingleHeadAttention, single_head_attention
from .window import GridAttention, grid_partition, grid_reverse
from .channel import ChannelAttention, channel_attention
from .gpsa import GPSA, gpsa, gpsa_offsets
from .linear import LinearGlobalAttention, LocalConcentration, LocalWindowAttention, relu_linear_attention
