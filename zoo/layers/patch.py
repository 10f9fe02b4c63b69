"""Patch embedding and patch merging for channels-last (B, H, W, C) hierarchical models."""
from __future__ import annotations

from typing import Optional, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import to_2tuple

from .mlp import map_linear

__all__ = ['PatchEmbed', 'PatchMerging']


class PatchEmbed(nn.Module):
    """Non-overlapping conv patchify (B, C, H, W) -> (B, H / p, W / p, D); any H, W (padded up to p)."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96,
                 norm_layer: Optional[Type[nn.Module]] = nn.LayerNorm):
        super().__init__()
        self.patch_size = to_2tuple(patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.patch_size
        pad_h, pad_w = (-x.shape[2]) % ph, (-x.shape[3]) % pw
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        # a dense (B, H, W, C) copy, not the permuted view: the residual stream that starts here keeps its first
        # operand's layout through every add, and a strided one made each LayerNorm copy it and each backward add
        # and norm mix layouts (ConViT-T, which has no patch norm). A norm would have copied it anyway.
        return self.norm(self.proj(x).permute(0, 2, 3, 1).contiguous())


class PatchMerging(nn.Module):
    """Swin's 2x2 merge: concatenate each 2x2 neighbourhood (odd sides padded), norm, then project."""

    def __init__(self, dim: int, out_dim: Optional[int] = None, norm_layer: Type[nn.Module] = nn.LayerNorm):
        super().__init__()
        self.out_dim = out_dim or 2 * dim
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
            H, W = H + H % 2, W + W % 2
        # channel order (h, w): (0,0), (1,0), (0,1), (1,1), as the released Swin weights expect
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return map_linear(self.reduction, self.norm(x))
