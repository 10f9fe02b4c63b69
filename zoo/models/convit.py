"""ConViT (d'Ascoli et al., ICML 2021): an isotropic DeiT whose first blocks use gated positional
self-attention (GPSA, a soft convolutional inductive bias); the class token joins after them and the last
blocks are plain multi-head self-attention.

Isotropic backbone: every block is a feature level at stride 16. `forward_intermediates` returns the chosen
blocks' patch tokens as NCHW (or NHWC) maps (the class token removed), or the raw token sequence with
output_fmt='NLC'; `features_only=True` defaults to blocks (2, 5, 8, 11). Any input size: the image is padded
to a patch multiple, the absolute position embedding is resampled to the patch grid and GPSA's offsets are
computed for that grid (outputs equal timm's `convit_*` at 224, where nothing changes).
Checkpoints: the official release (facebookresearch/convit) and timm's `convit_*` weights both load.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed, to_2tuple, trunc_normal_
from timm.models import generate_default_cfgs
from timm.models.vision_transformer import init_weights_vit_timm
from torch.utils.checkpoint import checkpoint

from ..layers.attention.dense import Attention
from ..layers.attention.gpsa import GPSA
from ..layers.metaformer import MetaFormerBlock
from ..layers.patch import PatchEmbed
from ._base import Backbone, take_indices
from ._builder import build_model, cfg, register_variants
from ._convert import rename
from .deit import TokenHead

__all__ = ['ConViT']


class ConViT(Backbone):
    output_fmt = 'NLC'  # forward_features: normed tokens, class token first

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: int = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'token',
            embed_dim: int = 768,
            depth: int = 12,
            num_heads: int = 16,
            local_up_to_layer: int = 10,
            locality_strength: float = 1.,
            mlp_ratio: float = 4.,
            qkv_bias: bool = False,
            norm_eps: float = 1e-6,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            drop_path_rate: float = 0.1,
    ):
        """
        Args:
            embed_dim: token width (48 x heads in the paper's variants).
            local_up_to_layer: number of leading GPSA blocks; the class token is inserted after them.
        """
        super().__init__()
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.img_size = to_2tuple(img_size)
        self.patch_size = patch_size
        self.min_input_size = (patch_size, patch_size)
        self.num_features = self.embed_dim = embed_dim
        self.local_up_to_layer = local_up_to_layer
        self.num_prefix_tokens = 1
        self.grad_checkpointing = False
        self.pos_grid = tuple(s // patch_size for s in self.img_size)
        norm = partial(nn.LayerNorm, eps=norm_eps)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()

        self.stem = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer=None)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_grid[0] * self.pos_grid[1], embed_dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.Sequential(*[
            MetaFormerBlock(
                embed_dim,
                GPSA(embed_dim, num_heads, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                     locality_strength=locality_strength) if i < local_up_to_layer else
                Attention(embed_dim, num_heads, qkv_bias=qkv_bias, proj_drop=proj_drop_rate),
                norm, mlp_ratio, proj_drop=proj_drop_rate, drop_path=dpr[i])
            for i in range(depth)])
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f'blocks.{i}') for i in range(depth)]
        self.norm = norm(embed_dim)
        self.head = TokenHead(embed_dim, num_classes, pool_type=global_pool, drop_rate=drop_rate)

        trunc_normal_(self.pos_embed, std=.02)
        trunc_normal_(self.cls_token, std=.02)
        self.apply(init_weights_vit_timm)
        for m in self.modules():
            if isinstance(m, GPSA):
                m.local_init()

    def set_input_size(self, img_size=None, **kwargs) -> None:
        """Resample the position embedding to the patch grid of `img_size` (other sizes also work per call)."""
        if img_size is None:
            return
        self.img_size = to_2tuple(img_size)
        grid = tuple(s // self.patch_size for s in self.img_size)
        with torch.no_grad():
            pos = resample_abs_pos_embed(self.pos_embed, list(grid), list(self.pos_grid), num_prefix_tokens=0)
        self.pos_embed = nn.Parameter(pos, requires_grad=self.pos_embed.requires_grad)
        self.pos_grid = grid

    # -- forward ---------------------------------------------------------------------------------
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> (B, h, w, C) patch tokens with the position embedding (resampled to h x w if needed)."""
        self.check_input(x)
        x = self.stem(x)
        grid = tuple(x.shape[1:3])
        pos = self.pos_embed
        if grid != self.pos_grid:
            pos = resample_abs_pos_embed(pos, list(grid), list(self.pos_grid), num_prefix_tokens=0)
        return x + pos.view(1, *grid, -1)

    def _run_block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if i == self.local_up_to_layer:  # maps -> tokens, class token first
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x.flatten(1, 2)), dim=1)
        block = self.blocks[i]
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    @staticmethod
    def _tokens(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1, 2) if x.ndim == 4 else x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._embed(x)
        for i in range(len(self.blocks)):
            x = self._run_block(i, x)
        return self.norm(self._tokens(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Block outputs at `indices` (timm semantics). output_fmt 'NCHW' / 'NHWC': patch tokens as maps at
        stride 16 (class token dropped); 'NLC': the token sequence as the block outputs it. `norm` applies
        the final norm to every taken output."""
        if output_fmt not in ('NCHW', 'NHWC', 'NLC'):
            raise ValueError(f"output_fmt must be 'NCHW', 'NHWC' or 'NLC', got {output_fmt!r}")
        taken, max_index = take_indices(len(self.blocks), indices)
        x = self._embed(x)
        B, h, w, _ = x.shape
        last = max_index if stop_early and not torch.jit.is_scripting() else len(self.blocks) - 1
        intermediates = []
        for i in range(last + 1):
            x = self._run_block(i, x)
            if i in taken:
                y = self.norm(x) if norm else x
                if output_fmt != 'NLC':
                    if y.ndim == 3:
                        y = y[:, self.num_prefix_tokens:].reshape(B, h, w, -1)
                    y = y.permute(0, 3, 1, 2) if output_fmt == 'NCHW' else y
                intermediates.append(y.contiguous())
        if intermediates_only:
            return intermediates
        return self.norm(self._tokens(x)), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        taken, max_index = take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head or max_index < self.local_up_to_layer:
            self.reset_classifier(0, '')
        return taken

    # -- training helpers ------------------------------------------------------------------------
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^cls_token|^pos_embed|^stem', blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])


# --- checkpoints -----------------------------------------------------------------------------------------
def checkpoint_filter_fn(state_dict, model):
    """Official ConViT release ({'model': sd} or a bare sd) or timm `convit_*` -> zoo layout."""
    state_dict = rename(state_dict, [
        (r'^patch_embed\.', 'stem.'),
        (r'^(blocks\.\d+)\.attn\.', r'\1.mixer.'),
        (r'^head\.(weight|bias)$', r'head.fc.\1'),
    ])
    pos = state_dict.get('pos_embed')
    if pos is not None and pos.shape != model.pos_embed.shape:
        side = int(round(pos.shape[1] ** .5))
        state_dict['pos_embed'] = resample_abs_pos_embed(pos, list(model.pos_grid), [side, side], num_prefix_tokens=0)
    return state_dict


def _create(variant: str, pretrained: bool = False, **kwargs):
    kwargs.setdefault('out_indices', (2, 5, 8, 11))
    return build_model(ConViT, variant, pretrained, num_stages=kwargs.get('depth', 12),
                       checkpoint_filter=checkpoint_filter_fn, **kwargs)


_URL = 'https://dl.fbaipublicfiles.com/convit/'
default_cfgs = generate_default_cfgs({
    f'zoo_convit_{size}.fb_in1k': cfg(_URL + f'convit_{size}.pth', pool_size=None, crop_pct=.875,
                                      interpolation='bicubic', first_conv='stem.proj', classifier='head.fc')
    for size in ('tiny', 'small', 'base')
})

# variants as data: the paper's Table 1 (heads; width = 48 x heads; 10 GPSA blocks then 2 MHSA blocks)
CONVIT_VARIANTS = {
    f'zoo_convit_{size}': dict(embed_dim=48 * heads, num_heads=heads, depth=12, local_up_to_layer=10)
    for size, heads in (('tiny', 4), ('small', 9), ('base', 16))
}

register_variants(_create, CONVIT_VARIANTS, __name__)
