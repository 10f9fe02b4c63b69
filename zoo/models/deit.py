"""DeiT host (Touvron et al., ICML 2021): an isotropic ViT (patch 16, class token, learned position embedding)
whose blocks take their token mixer as an argument (Agent-DeiT and InLine-DeiT are this host with another mixer;
ConViT is this host with GPSA in the first blocks and the class token inserted after them, `cls_token_at`).
The isotropic side of the backbone contract lives here once: the hooks of `Backbone.forward_features` /
`forward_intermediates` (class token, position embedding, token -> map layouts), pruning, grad checkpointing,
parameter groups and resolution changes.

Tokens are (B, 1 + H * W, C), class token first (patch tokens only, (B, H * W, C), before block `cls_token_at`).
A mixer is called as mixer_layer(dim=, num_heads=, window_size=<patch grid at the built size>, qkv_bias=,
attn_drop=, proj_drop=, num_prefix_tokens=<1, or 0 before the class token>, **mixer_args[block]) and applied as
mixer(tokens, (H, W)), so position-dependent mixers get the grid explicitly. The position embedding is stored
at the built grid and resampled (bicubic, timm's `resample_abs_pos_embed`) for any other input size, on the fly,
by `set_input_size` and by checkpoint filters.
`features_only` returns the chosen blocks' patch tokens as NCHW maps at stride 16.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import DropPath, get_device_dtype, resample_abs_pos_embed, to_2tuple, trunc_normal_
from timm.models.vision_transformer import global_pool_nlc

from ..layers import Attention, Mlp, PatchEmbed
from ._base import Backbone
from ._convert import note_resampled, rename
from ._hosts import init_linears_

__all__ = ['DeiT', 'DeiTBlock', 'TokenAttention', 'TokenHead', 'deit_rename', 'resize_deit_pos_embed']


class TokenAttention(Attention):
    """Plain multi-head self-attention with the DeiT host's mixer signature (the grid is not needed)."""

    def __init__(self, dim: int, num_heads: int, window_size=None, qkv_bias: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0., num_prefix_tokens: int = 1):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)

    def forward(self, x: torch.Tensor, feat_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        return super().forward(x)


class DeiTBlock(nn.Module):
    """x + mixer(norm(x), grid), then x + mlp(norm(x)), on (B, num_prefix_tokens + H * W, C) tokens."""

    def __init__(self, dim: int, num_heads: int, grid_size: Tuple[int, int], mixer_layer: Callable = TokenAttention,
                 mlp_ratio: float = 4., qkv_bias: bool = True, proj_drop: float = 0., attn_drop: float = 0.,
                 drop_path: float = 0., norm_layer: Callable = nn.LayerNorm, num_prefix_tokens: int = 1,
                 **mixer_kwargs):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = mixer_layer(dim=dim, num_heads=num_heads, window_size=grid_size, qkv_bias=qkv_bias,
                                attn_drop=attn_drop, proj_drop=proj_drop, num_prefix_tokens=num_prefix_tokens,
                                **mixer_kwargs)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, feat_size: Tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), feat_size))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class TokenHead(nn.Module):
    """Classifier on pooled tokens, pooled as timm's ViT pools them: the class token ('token'), the patch tokens'
    mean / max / mean + max ('avg', 'max', 'avgmax'), or not at all (''); `reset` like timm's heads."""
    pool_types = ('', 'token', 'avg', 'max', 'avgmax')

    def __init__(self, in_features: int, num_classes: int, pool_type: str = 'token', drop_rate: float = 0.,
                 num_prefix_tokens: int = 1):
        super().__init__()
        self.in_features = self.num_features = in_features
        self.num_prefix_tokens = num_prefix_tokens
        self.pool_type = self._checked(pool_type)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def _checked(self, pool_type: str) -> str:
        if pool_type not in self.pool_types:
            raise ValueError(f'token pooling must be one of {self.pool_types}, got {pool_type!r}')
        return pool_type

    def reset(self, num_classes: int, pool_type: Optional[str] = None, reset_other: bool = False,
              in_features: Optional[int] = None, device=None, dtype=None) -> None:
        """reset_other: nothing else to drop (timm's head API)."""
        if pool_type is not None:
            self.pool_type = self._checked(pool_type)
        if in_features is not None:
            self.in_features = self.num_features = in_features
        dd = get_device_dtype(self, device=device, dtype=dtype)
        self.fc = nn.Linear(self.in_features, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(global_pool_nlc(x, self.pool_type, num_prefix_tokens=self.num_prefix_tokens))
        return x if pre_logits else self.fc(x)


class DeiT(Backbone):
    output_fmt = 'NLC'
    feature_levels = 'blocks'
    norm_fits_every_level = True
    intermediate_fmts = ('NCHW', 'NHWC', 'NLC')

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: int = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'token',
            embed_dim: int = 192,
            depth: int = 12,
            num_heads: int = 3,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            pos_drop_rate: Optional[float] = None,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            norm_layer: Callable = partial(nn.LayerNorm, eps=1e-6),
            mixer_layer: Callable = TokenAttention,
            mixer_args: Optional[Sequence[Dict]] = None,
            cls_token_at: int = 0,
            no_embed_class: bool = False,
            class_token: bool = True,
            pos_embed: str = 'learn',
            patch_norm: bool = False,
    ):
        """
        Args:
            mixer_layer: token mixer class (see module doc).
            mixer_args: one dict per block of extra mixer keyword arguments; a dict may name its own
                `mixer_layer` (e.g. agent attention in the first blocks, plain attention after).
            pos_drop_rate: dropout after the position embedding (None: drop_rate).
            cls_token_at: the class token is inserted before this block; the blocks before it see patch tokens
                only and their mixers are built with num_prefix_tokens=0 (ConViT: after the GPSA blocks).
            no_embed_class: the position embedding covers the patch tokens only, (1, H * W, C); required when
                the class token joins after block 0.
            class_token, pos_embed ('learn' or 'none'): timm ViT's switches; without either (the isotropic NAT /
                DiNAT) the blocks see patch tokens only, and any input size needs nothing resampled.
            patch_norm: a norm_layer after the patch projection (the isotropic NAT / DiNAT).
        """
        super().__init__()
        if pos_embed not in ('learn', 'none'):
            raise ValueError(f"pos_embed must be 'learn' or 'none', got {pos_embed!r}")
        if cls_token_at and not no_embed_class:
            raise ValueError('a class token inserted after the first block has no position embedding: '
                             'set no_embed_class=True')
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.img_size = to_2tuple(img_size)
        self.patch_size = patch_size
        self.min_input_size = (patch_size, patch_size)
        self.num_features = self.embed_dim = embed_dim
        self.has_class_token = class_token
        self.num_prefix_tokens = 1 if class_token else 0
        self.cls_token_at = cls_token_at
        self.no_embed_class = no_embed_class
        self.grid_size = self._grid(self.img_size)
        mixer_args = mixer_args or [{}] * depth
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()

        self.stem = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer=norm_layer if patch_norm else None)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        num_pos = self._pos_prefix + self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, embed_dim)) if pos_embed == 'learn' else None
        self.pos_drop = nn.Dropout(drop_rate if pos_drop_rate is None else pos_drop_rate)
        blocks = []
        for i in range(depth):
            args = dict(mixer_args[i])
            blocks.append(DeiTBlock(embed_dim, num_heads, self.grid_size, args.pop('mixer_layer', mixer_layer),
                                    mlp_ratio, qkv_bias, proj_drop_rate, attn_drop_rate, dpr[i], norm_layer,
                                    num_prefix_tokens=self._prefix_at(i), **args))
        self.blocks = nn.Sequential(*blocks)
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f'blocks.{i}') for i in range(depth)]
        self.norm = norm_layer(embed_dim)
        self.head = TokenHead(embed_dim, num_classes, global_pool, drop_rate, self.num_prefix_tokens)
        for p in (self.pos_embed, self.cls_token):
            if p is not None:
                trunc_normal_(p, std=.02)
        self.apply(init_linears_)

    def _grid(self, img_size: Tuple[int, int]) -> Tuple[int, int]:
        return tuple(math.ceil(s / self.patch_size) for s in img_size)

    @property
    def _pos_prefix(self) -> int:
        """Prefix tokens the position embedding has entries for."""
        return 0 if self.no_embed_class else self.num_prefix_tokens

    def _prefix_at(self, i: int) -> int:
        """Prefix tokens in the input of block i."""
        return self.num_prefix_tokens if i >= self.cls_token_at else 0

    def _resize(self) -> None:
        """Position embedding and mixer position terms are resampled to `self.img_size`'s patch grid."""
        grid = self._grid(self.img_size)
        if self.pos_embed is not None:
            with torch.no_grad():
                pos = resample_abs_pos_embed(self.pos_embed, list(grid), list(self.grid_size),
                                             num_prefix_tokens=self._pos_prefix)
            self.pos_embed = nn.Parameter(pos, requires_grad=self.pos_embed.requires_grad)
        self.grid_size = grid
        for block in self.blocks:
            if hasattr(block.attn, 'set_window_size'):
                block.attn.set_window_size(grid)

    # -- forward ---------------------------------------------------------------------------------
    def _with_class_token(self, x: torch.Tensor) -> torch.Tensor:
        if self.cls_token is None:
            return x
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)

    def _begin(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Image -> tokens with the position embedding (resampled to the patch grid if needed), and the grid."""
        self.check_input(x)
        x = self.stem(x)  # B, H, W, C
        B, H, W, C = x.shape
        x = x.reshape(B, H * W, C)
        pos = self.pos_embed
        if pos is not None and (H, W) != self.grid_size:
            pos = resample_abs_pos_embed(pos, [H, W], list(self.grid_size), num_prefix_tokens=self._pos_prefix)
        if pos is not None and not self.no_embed_class:
            x = self._with_class_token(x) + pos
        else:
            x = x if pos is None else x + pos
            if self.cls_token_at == 0:
                x = self._with_class_token(x)
        return self.pos_drop(x), (H, W)

    def _level(self, i: int, block: nn.Module, x: torch.Tensor, feat_size: Tuple[int, int]) -> torch.Tensor:
        if 0 < self.cls_token_at == i:  # the class token joins here (after ConViT's GPSA blocks)
            x = self._with_class_token(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return torch.utils.checkpoint.checkpoint(block, x, feat_size, use_reentrant=False)
        return block(x, feat_size)

    def _take(self, i: int, x: torch.Tensor, feat_size: Tuple[int, int], norm: bool, output_fmt: str) -> torch.Tensor:
        """Block i's output tokens ('NLC') or its patch tokens as an NCHW / NHWC map; `norm` applies the final norm
        to every taken block (timm's ViT semantics)."""
        x = self.norm(x) if norm else x
        if output_fmt == 'NLC':
            return x
        return self._format(x[:, self._prefix_at(i):].reshape(x.shape[0], *feat_size, -1), output_fmt, 'NHWC')

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        taken = super().prune_intermediate_layers(indices, prune_norm, prune_head)
        if not prune_head and len(self.blocks) <= self.cls_token_at:  # no class token left for the head
            self.reset_classifier(0, '')
        return taken

    # -- training helpers ------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return dict(stem=r'^cls_token|^pos_embed|^stem', blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])


def resize_deit_pos_embed(state_dict, model):
    """Resample a square checkpoint `pos_embed` ((1, 1 + n * n, C), or (1, n * n, C) with no_embed_class) to the
    model's grid where the sizes differ."""
    v = state_dict.get('pos_embed')
    if v is not None and v.shape != model.pos_embed.shape:
        prefix = model._pos_prefix
        side = math.isqrt(v.shape[1] - prefix)
        state_dict['pos_embed'] = resample_abs_pos_embed(v, list(model.grid_size), [side, side],
                                                         num_prefix_tokens=prefix)
        note_resampled('pos_embed', v, state_dict['pos_embed'])
    return state_dict


def deit_rename(state_dict):
    """The authors' DeiT layout (timm's old VisionTransformer: patch_embed.proj, plain head) -> zoo DeiT layout."""
    return rename(state_dict, [(r'^patch_embed\.', 'stem.'), (r'^head\.(weight|bias)$', r'head.fc.\1')])
