"""Focal modulation (Yang et al., NeurIPS 2022): the FocalNet token mixer, on channels-last (B, H, W, C) maps.

Instead of attention, every token gathers context with a stack of depthwise convolutions of growing kernel
(hierarchical contextualization), mixes the levels with per-token gates (gated aggregation) and multiplies
its query with a projection of that context (modulation).
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._cache import DerivedTensors, eager_inference
from .mlp import inference_linear, map_linear

__all__ = ['focal_modulation', 'FocalModulation']


def focal_modulation(q: torch.Tensor, ctx: torch.Tensor, gates: torch.Tensor,
                     focal_layers: Sequence[Callable[[torch.Tensor], torch.Tensor]],
                     h: Callable[[torch.Tensor], torch.Tensor], normalize: bool = False) -> torch.Tensor:
    """q * h(sum_l gates[l] * ctx_l + gates[L] * gelu(mean_hw(ctx_L))), ctx_l = focal_layers[l](ctx_{l-1}).

    q, ctx: (B, H, W, C); gates: (B, H, W, L + 1) for L = len(focal_layers) levels; each focal layer maps
    (B, C, H, W) -> (B, C, H, W) (depthwise conv + GELU, 'same' padding, so any H, W);
    h: the modulator projection on (B, H, W, C). normalize divides the aggregated context by L + 1.
    Returns (B, H, W, C). The convolutions run on channels-last memory (a permuted view, no NCHW copy) and everything
    else on (B, H, W, C), so that every gradient comes back in that one layout: a mean over the NCHW view's (H, W)
    expanded its gradient NCHW, and the GELU and convolution backwards of the levels below then ran on mixed layouts
    (FocalNet-T's first-level GELU backward 6.5x slower, 2 threads). The first convolution reads ctx as that view of
    f's output, as timm's FocalNet does, not as a dense copy: the conv makes its own copy for the kernel and frees
    it, while autograd saves the view (whose storage q and gates keep anyway). An explicit copy was saved for
    backward too, one more (B, H, W, C) map per block (a checkpointed block's recompute held it; values are
    bit-identical either way)."""
    level = len(focal_layers)
    in_place = eager_inference()  # the same sums, accumulated in place: two fewer full-size temporaries per level

    def accumulate(total: Optional[torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if total is None:
            return a * b
        return total.addcmul_(a, b) if in_place else total + a * b

    ctx_all = None
    for l, layer in enumerate(focal_layers):
        ctx = layer(ctx.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        ctx_all = accumulate(ctx_all, ctx, gates[..., l:l + 1])
    ctx_all = accumulate(ctx_all, F.gelu(ctx.mean((1, 2), keepdim=True)), gates[..., level:])
    if normalize:
        ctx_all = ctx_all / (level + 1)
    return q * h(ctx_all)


class FocalModulation(nn.Module):
    """f (linear to q, ctx, gates) -> focal_modulation -> [norm] -> proj, on (B, H, W, C).

    Level l uses a depthwise kernel focal_factor * l + focal_window. Keys follow the official release
    (f, h, proj, focal_layers.{l}.0) with h as a linear layer (the release's 1x1 conv, reshaped on load).
    """

    def __init__(self, dim: int, focal_level: int, focal_window: int = 3, focal_factor: int = 2,
                 bias: bool = True, proj_drop: float = 0., normalize_modulator: bool = False,
                 norm_layer: Optional[Callable[[int], nn.Module]] = None):
        super().__init__()
        self.dim, self.focal_level, self.normalize_modulator = dim, focal_level, normalize_modulator
        self.f = nn.Linear(dim, 2 * dim + focal_level + 1, bias=bias)
        self.h = nn.Linear(dim, dim, bias=bias)
        self.kernel_sizes = [focal_factor * k + focal_window for k in range(focal_level)]
        self.focal_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False), nn.GELU())
            for k in self.kernel_sizes)
        self.norm = norm_layer(dim) if norm_layer else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self._f_padded = DerivedTensors()

    def _project_in(self, x: torch.Tensor) -> torch.Tensor:
        """self.f(x). At eager inference f's 2 dim + L + 1 outputs are padded with zero rows to a multiple of 8:
        MKL's sgemm runs 1.3-1.45x faster at the padded width (FocalNet-T's four stage shapes, 2 threads); the
        result is a view of the padded output, which the split below only slices."""
        width = self.f.out_features
        if width % 8 == 0 or not eager_inference(self):
            return map_linear(self.f, x)

        def pad():
            rows = -width % 8
            bias = self.f.bias if self.f.bias is not None else self.f.weight.new_zeros(width)
            return F.pad(self.f.weight, (0, 0, 0, rows)), F.pad(bias, (0, rows))

        weight, bias = self._f_padded.get(pad, self.f.weight, self.f.bias)
        return inference_linear(x, weight, bias)[..., :width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, ctx, gates = self._project_in(x).split((self.dim, self.dim, self.focal_level + 1), dim=-1)
        x = focal_modulation(q, ctx, gates, self.focal_layers, functools.partial(map_linear, self.h),
                             self.normalize_modulator)
        return self.proj_drop(map_linear(self.proj, self.norm(x)))

    def extra_repr(self) -> str:
        return f'dim={self.dim}, kernel_sizes={self.kernel_sizes}'
