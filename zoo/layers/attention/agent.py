"""Agent attention (Han et al., ECCV 2024): softmax attention routed through a few pooled "agent" tokens.

Agents A (pooled queries, a p x p grid) first gather from all tokens, then every token reads from the agents:

    agent_v = softmax(A K^T * s + B_a) V          (heads, A, d)
    out     = softmax(Q A^T * s + B_t) agent_v    (heads, N, d)
    out    += depthwise_conv(V)                   (restores feature diversity)

so the cost is linear in N. B_a / B_t are learned position biases between each agent and each token: a
low-resolution (agents, 7, 7) map resampled to the feature map, plus per-row and per-column terms stored at
the feature size the model is built for. Every term is resampled bilinearly (align_corners=False, as the
authors' detection code does) whenever the map has another (H, W); sizes always come in explicitly.
For dense prediction the authors pool the queries to a larger agent grid than the p x p one trained on
(`agent_shape`, e.g. 9-12-14-7 per Swin stage for detection); the biases are then resampled over the agent
grid too, so the classification weights load unchanged.
Both softmax attentions run through `dense_attention`, so they share its backends (SDPA / reference).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import to_2tuple, trunc_normal_

from .dense import dense_attention
from ..mlp import map_linear

__all__ = ['agent_attention', 'agent_position_biases', 'resize_agent_biases', 'resize_grid', 'AgentAttention']

Size2 = Tuple[int, int]


def resize_grid(t: torch.Tensor, size: Size2) -> torch.Tensor:
    """Bilinear resample of the last two dims of (..., h, w) to `size` (align_corners=False); no-op if equal."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    lead = t.shape[:-2]
    out = F.interpolate(t.reshape(1, -1, *t.shape[-2:]), size=tuple(size), mode='bilinear', align_corners=False)
    return out.reshape(*lead, *size)


def agent_position_biases(
        an_bias: torch.Tensor, na_bias: torch.Tensor, ah_bias: torch.Tensor, aw_bias: torch.Tensor,
        ha_bias: torch.Tensor, wa_bias: torch.Tensor, size: Size2, agent_shape: Optional[Size2] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Agent<->token position biases for an H x W map.

    an_bias / na_bias: (heads, A, h0, w0) low-resolution maps (agents->tokens / tokens->agents), A = p * p;
    ah_bias: (1, heads, A, Hb, 1), aw_bias: (1, heads, A, 1, Wb), ha_bias: (1, heads, Hb, 1, A),
    wa_bias: (1, heads, 1, Wb, A): row/column terms at the built size (Hb, Wb).
    agent_shape: the (a_h, a_w) agent grid used now (default p x p); the biases are resampled to it.
    Returns agent_bias (heads, a, H*W) and token_bias (heads, H*W, a), a = a_h * a_w.
    """
    H, W = size
    heads, A = an_bias.shape[:2]
    p = math.isqrt(A)
    agent_shape = tuple(agent_shape or (p, p))
    agent_bias = resize_grid(an_bias, size) + resize_grid((ah_bias + aw_bias)[0], size)
    token_bias = resize_grid(na_bias, size) + resize_grid((ha_bias + wa_bias)[0].permute(0, 3, 1, 2), size)
    if agent_shape == (p, p):
        return agent_bias.reshape(heads, A, H * W), token_bias.reshape(heads, A, H * W).transpose(1, 2)
    # both (heads, A, H, W) -> (heads, H*W, a_h, a_w): resample over the agent grid
    agent_bias, token_bias = [
        resize_grid(b.reshape(heads, p, p, H * W).permute(0, 3, 1, 2), agent_shape).reshape(heads, H * W, -1)
        for b in (agent_bias, token_bias)]
    return agent_bias.transpose(1, 2), token_bias


def agent_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, agents: torch.Tensor,
                    agent_bias: Optional[torch.Tensor] = None, token_bias: Optional[torch.Tensor] = None,
                    scale: Optional[float] = None, dropout_p: float = 0.) -> torch.Tensor:
    """Two-step agent attention.

    q, k, v: (B, heads, N, d); agents: (B, heads, A, d); agent_bias: broadcastable to (B, heads, A, N);
    token_bias: broadcastable to (B, heads, N, A). Returns (B, heads, N, d).
    """
    agent_v = dense_attention(agents, k, v, bias=agent_bias, scale=scale, dropout_p=dropout_p)
    return dense_attention(q, agents, agent_v, bias=token_bias, scale=scale, dropout_p=dropout_p)


class AgentAttention(nn.Module):
    """Global agent attention on (B, H, W, C) maps.

    Args:
        window_size: the (H, W) of the feature map the model is built for; the row/column bias terms are
            stored at this size (hosts such as Swin pass the window clamped to the map, i.e. the map size).
        shift_size: accepted for host compatibility and ignored (the mixer is global).
        agent_num: number of agents, a square (p * p); they are the queries average-pooled to p x p.
        agent_shape: pool the queries to this (a_h, a_w) agent grid instead (dense prediction at large
            sizes, as the authors' detection/segmentation configs do); the biases are resampled to it.
        kernel_size: depthwise conv on V added to the output.
    """

    def __init__(self, dim: int, num_heads: int, window_size: Size2 = (14, 14), shift_size: Size2 = (0, 0),
                 qkv_bias: bool = True, attn_drop: float = 0., proj_drop: float = 0., agent_num: int = 49,
                 agent_shape: Optional[Size2] = None, kernel_size: int = 3, bias_grid: int = 7,
                 num_prefix_tokens: int = 0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.agent_num = agent_num
        self.pool_size = math.isqrt(agent_num)
        if self.pool_size ** 2 != agent_num:
            raise ValueError(f'agent_num must be a square number, got {agent_num}')
        self.agent_shape = to_2tuple(agent_shape) if agent_shape is not None else (self.pool_size, self.pool_size)
        if num_prefix_tokens and self.agent_shape != (self.pool_size, self.pool_size):
            raise ValueError('agent_shape cannot change the agent grid of a model with prefix tokens')
        self.window_size = to_2tuple(window_size)
        Hb, Wb = self.window_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.an_bias = nn.Parameter(torch.zeros(num_heads, agent_num, bias_grid, bias_grid))
        self.na_bias = nn.Parameter(torch.zeros(num_heads, agent_num, bias_grid, bias_grid))
        self.ah_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, Hb, 1))
        self.aw_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, 1, Wb))
        self.ha_bias = nn.Parameter(torch.zeros(1, num_heads, Hb, 1, agent_num))
        self.wa_bias = nn.Parameter(torch.zeros(1, num_heads, 1, Wb, agent_num))
        self.num_prefix_tokens = num_prefix_tokens
        if num_prefix_tokens:  # biases between the agents and each prefix (class) token
            self.ac_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, num_prefix_tokens))
            self.ca_bias = nn.Parameter(torch.zeros(1, num_heads, num_prefix_tokens, agent_num))
            trunc_normal_(self.ac_bias, std=.02)
            trunc_normal_(self.ca_bias, std=.02)
        for p in (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias):
            trunc_normal_(p, std=.02)

    @torch.no_grad()
    def set_window_size(self, window_size: Size2, shift_size: Size2 = (0, 0)) -> None:
        """Resample the row/column bias terms to a new built-for feature size."""
        window_size = to_2tuple(window_size)
        if window_size == self.window_size:
            return
        for name, state in resize_agent_biases(
                {n: getattr(self, n) for n in ('ah_bias', 'aw_bias', 'ha_bias', 'wa_bias')}, window_size).items():
            setattr(self, name, nn.Parameter(state, requires_grad=getattr(self, name).requires_grad))
        self.window_size = window_size

    def biases(self, size: Size2) -> Tuple[torch.Tensor, torch.Tensor]:
        return agent_position_biases(self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias,
                                     self.wa_bias, size, self.agent_shape)

    def forward(self, x: torch.Tensor, feat_size: Optional[Size2] = None) -> torch.Tensor:
        """x: a (B, H, W, C) map, or (B, P + H * W, C) tokens (P prefix tokens first) with feat_size=(H, W)."""
        if x.ndim == 4:
            B, H, W, C = x.shape
            return self.mix_tokens(x.reshape(B, H * W, C), (H, W)).reshape(B, H, W, C)
        return self.mix_tokens(x, feat_size)

    def mix_tokens(self, x: torch.Tensor, feat_size: Size2) -> torch.Tensor:
        B, L, C = x.shape
        H, W = feat_size
        P = self.num_prefix_tokens
        qkv = map_linear(self.qkv, x)
        q_map = qkv[:, P:, :C].transpose(1, 2).reshape(B, C, H, W)
        agents = F.adaptive_avg_pool2d(q_map, self.agent_shape)  # B, C, a_h, a_w
        agents = agents.reshape(B, self.num_heads, self.head_dim, -1).transpose(-2, -1)
        q, k, v = qkv.reshape(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        agent_bias, token_bias = self.biases((H, W))
        if P:
            agent_bias = torch.cat([self.ac_bias[0], agent_bias], dim=-1)
            token_bias = torch.cat([self.ca_bias[0], token_bias], dim=-2)
        out = agent_attention(q, k, v, agents, agent_bias, token_bias,
                              dropout_p=self.attn_drop if self.training else 0.)
        out = out.transpose(1, 2).reshape(B, L, C)
        v_map = qkv[:, P:, 2 * C:].transpose(1, 2).reshape(B, C, H, W)
        local = self.dwc(v_map).flatten(2).transpose(1, 2)
        out = torch.cat([out[:, :P], out[:, P:] + local], dim=1) if P else out + local
        return self.proj_drop(map_linear(self.proj, out))

    def extra_repr(self) -> str:
        return (f'num_heads={self.num_heads}, agent_num={self.agent_num}, agent_shape={self.agent_shape}, '
                f'bias_size={self.window_size}')


def resize_agent_biases(biases: dict, size: Size2) -> dict:
    """Resample {'ah_bias', 'aw_bias', 'ha_bias', 'wa_bias'} (any subset, author shapes) to a new (H, W).

    Linear along the one spatial axis each term has, which equals resampling their sum bilinearly."""
    H, W = size
    out = {}
    for name, t in biases.items():
        if name == 'ah_bias':    # 1, heads, A, Hb, 1
            out[name] = resize_grid(t, (H, 1))
        elif name == 'aw_bias':  # 1, heads, A, 1, Wb
            out[name] = resize_grid(t, (1, W))
        elif name == 'ha_bias':  # 1, heads, Hb, 1, A
            out[name] = resize_grid(t.permute(0, 1, 4, 2, 3), (H, 1)).permute(0, 1, 3, 4, 2)
        elif name == 'wa_bias':  # 1, heads, 1, Wb, A
            out[name] = resize_grid(t.permute(0, 1, 4, 2, 3), (1, W)).permute(0, 1, 3, 4, 2)
        else:
            raise KeyError(name)
    return out
