"""MAC counting with fvcore, plus handles for the attention ops fvcore does not know.

Convention: one multiply-accumulate = one MAC; papers in this zoo report "FLOPs" that are MACs
(fvcore/mmcv style), so `count_macs` is what their GFLOPs columns compare to.
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

__all__ = ['count_macs', 'count_params', 'OP_HANDLES']


def _sdpa_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """q @ k^T and attn @ v: 2 * (batch dims) * Lq * Lk * d (value dim taken from v)."""
    q, k, v = (get_shape(i) for i in inputs[:3])
    batch = 1
    for s in q[:-2]:
        batch *= s
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


OP_HANDLES = {
    'aten::scaled_dot_product_attention': _sdpa_macs,
}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: Union[int, Sequence[int]] = 224, batch_size: int = 1) -> int:
    """MACs of one forward pass at `input_size` ((C,) H, W or an int), per image."""
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    elif len(input_size) == 2:
        input_size = (3, *input_size)
    x = torch.randn(batch_size, *input_size)
    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(model, x).set_op_handle(**OP_HANDLES)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
        return analysis.total() // batch_size
    finally:
        model.train(was_training)
