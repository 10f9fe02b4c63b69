"""x + branch(x) on channels-last (B, H, W, C) maps, written so that torch.compile lays the sum out well."""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ['residual']


def residual(x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor], fmt: str = 'NHWC') -> torch.Tensor:
    """x + branch(x) for a (B, H, W, C) map x (fmt 'NCHW', or not 4-D: as written). The same values and memory,
    but the sum and the branch's input are taken through x's (B, C, H, W) view.

    Why: in a graph with convolutions, inductor gives each 4-D intermediate that feeds a convolution (directly or
    not) and has several readers channels-last strides *for its shape*, dim 1 innermost. For a (B, H, W, C) stream
    that puts H innermost, and every LayerNorm over C then reads and writes at a stride (compiled
    FocalNet-T and Swin-T on a 2-core Zen 4, one thread: 7% and 5% slower). Read through the view, the stream's
    one node with several readers is the (B, C, H, W) one, whose channels-last order is the map's own: C
    innermost. Eager: four free permutes."""
    if x.dim() != 4 or fmt != 'NHWC':
        return x + branch(x)
    nchw = x.permute(0, 3, 1, 2)
    return (nchw + branch(nchw.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
