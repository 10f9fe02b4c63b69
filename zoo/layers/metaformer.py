"""The MetaFormer block (Yu et al., CVPR 2022): norm -> token mixer and norm -> MLP residual branches with
optional layer scale and stochastic depth, the token mixer passed in. PoolFormer (pooling) and FocalNet
(focal modulation) are this block with different mixers and layouts."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
from timm.layers import DropPath, LayerScale, LayerScale2d

from .mlp import Mlp
from .residual import residual

__all__ = ['MetaFormerBlock']


class MetaFormerBlock(nn.Module):
    """x + drop_path(ls1(mixer(norm1(x)))), then x + drop_path(ls2(mlp(norm2(x)))).

    fmt: layout of x, 'NHWC' (linear MLP, layer scale on the last dim) or 'NCHW' (1x1-conv MLP).
    layer_scale_init: None for no layer scale. Keys: norm1, mixer, ls1.gamma, norm2, mlp.fc1/fc2, ls2.gamma.
    post_norm: the norms follow the branches instead, x + drop_path(ls1(norm1(mixer(x)))) (FocalNet-L/XL/H: it
    keeps large models' training stable).
    """

    def __init__(self, dim: int, mixer: nn.Module, norm_layer: Callable[[int], nn.Module], mlp_ratio: float = 4.,
                 act_layer: Callable = nn.GELU, mlp_bias: bool = True, layer_scale_init: Optional[float] = None,
                 proj_drop: float = 0., drop_path: float = 0., fmt: str = 'NHWC', post_norm: bool = False):
        super().__init__()
        self.post_norm, self.fmt = post_norm, fmt
        ls_layer = LayerScale2d if fmt == 'NCHW' else LayerScale
        self.norm1 = norm_layer(dim)
        self.mixer = mixer
        self.ls1 = ls_layer(dim, layer_scale_init) if layer_scale_init is not None else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, bias=mlp_bias, drop=proj_drop,
                       use_conv=fmt == 'NCHW')
        self.ls2 = ls_layer(dim, layer_scale_init) if layer_scale_init is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.post_norm:
            x = residual(x, lambda t: self.drop_path(self.ls1(self.norm1(self.mixer(t)))), self.fmt)
            return residual(x, lambda t: self.drop_path(self.ls2(self.norm2(self.mlp(t)))), self.fmt)
        x = residual(x, lambda t: self.drop_path(self.ls1(self.mixer(self.norm1(t)))), self.fmt)
        return residual(x, lambda t: self.drop_path(self.ls2(self.mlp(self.norm2(t)))), self.fmt)
