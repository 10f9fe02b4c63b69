"""timm's Mlp with an in-place activation at inference, and MLP variants that timm.layers lacks."""
from __future__ import annotations

import functools
import time
from typing import Callable, Dict, Iterable, Optional, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp as _TimmMlp

from . import _native
from ._cache import capturing_graph, eager_inference
from .activations import apply_inplace

__all__ = ['Mlp', 'DWConvMlp', 'map_linear', 'inference_linear']


# Whether a linear on a channels-last (B, H, W, C) map runs faster as nn.Linear (MKL's sgemm) or as a 1x1
# convolution of the map's NCHW view (oneDNN) depends on the CPU and the thread count: on a 2-core Zen 4, a training
# step's linears (forward + backward) took 0.97x as long as convolutions on 1 thread but 1.08x on 2, where MKL
# scales worse (FocalNet-T's training step 8% faster, Swin-T's 4%). So eager training measures it once per machine and
# thread count (_native.measured) and takes the convolution only when it wins by _MARGIN.
_MEASURED_SHAPES = ((192, 768), (768, 192))  # (in, out) of Swin-T's stage-2 MLP, on a 8 x 28 x 28 map
_MARGIN = 1.05


def _as_conv(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    weight = linear.weight[:, :, None, None]
    return F.conv2d(x.permute(0, 3, 1, 2), weight, linear.bias).permute(0, 2, 3, 1)


def _best_times(cases: Iterable[Dict[str, Callable[[], object]]], reps: int = 5) -> Dict[str, float]:
    """{name: seconds}: each candidate's best of `reps` wall times after a warm-up, summed over the cases (dicts of
    candidates doing the same work), the candidates taking turns (the threads run in parallel; the best is the
    least disturbed)."""
    total: Dict[str, float] = {}
    for candidates in cases:
        for fn in candidates.values():
            fn()
        best = dict.fromkeys(candidates, float('inf'))
        for _ in range(reps):
            for name, fn in candidates.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
        for name, seconds in best.items():
            total[name] = total.get(name, 0.) + seconds
    return total


def _measure_map_linear() -> Dict[str, float]:
    """{'linear' | 'conv': seconds} of a training step's linears (forward + backward) on _MEASURED_SHAPES at this
    thread count, ~1 s."""
    gen = torch.Generator().manual_seed(0)

    def cases():
        for c_in, c_out in _MEASURED_SHAPES:
            linear = nn.Linear(c_in, c_out)
            x = torch.randn(8, 28, 28, c_in, generator=gen, requires_grad=True)
            grad = torch.randn(8, 28, 28, c_out, generator=gen)
            yield {'linear': lambda: linear(x).backward(grad), 'conv': lambda: _as_conv(linear, x).backward(grad)}
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast('cpu', enabled=False):
        return _best_times(cases())


@functools.lru_cache(maxsize=None)
def _conv_trains_faster(threads: int) -> bool:
    times = _native.measured(f'map_linear_train_t{threads}_v1', _measure_map_linear)
    return times['conv'] * _MARGIN <= times['linear']


# Eager inference: the same GEMMs through oneDNN's matmul (torch.ops.mkldnn._linear_pointwise) instead of MKL's
# sgemm. On a 2-core Zen 4 (AVX-512) oneDNN took 0.88x as long over Swin-T's sixteen batch-slice shapes (4% slower at
# one shape in one of three runs); other CPUs may differ, so it is measured once per machine and thread count on
# slices of Swin-T's stages 1, 2 and 4 (rows, in, out), and taken when it wins by _INFERENCE_MARGIN.
_INFERENCE_SHAPES = ((3136, 96, 288), (1568, 768, 192), (392, 768, 3072))
_INFERENCE_MARGIN = 1.03


def _measure_inference_linear() -> Dict[str, float]:
    """{'mkl' | 'onednn': seconds} of the linears of _INFERENCE_SHAPES at this thread count, ~0.3 s."""
    if not torch.backends.mkldnn.is_available():
        return {'mkl': 0., 'onednn': float('inf')}
    gen = torch.Generator().manual_seed(0)

    def cases():
        for rows, c_in, c_out in _INFERENCE_SHAPES:
            x = torch.randn(rows, c_in, generator=gen)
            weight, bias = torch.randn(c_out, c_in, generator=gen), torch.randn(c_out, generator=gen)
            yield {'mkl': lambda: F.linear(x, weight, bias), 'onednn': lambda: _onednn_linear(x, weight, bias)}
    with torch.inference_mode():
        return _best_times(cases())


@functools.lru_cache(maxsize=None)
def _onednn_infers_faster(threads: int) -> bool:
    times = _native.measured(f'linear_infer_t{threads}_v1', _measure_inference_linear)
    return times['onednn'] * _INFERENCE_MARGIN <= times['mkl']


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [], '')


def inference_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """F.linear(x, weight, bias) for eager inference (no autograd: oneDNN's op has no backward): on a CPU float32
    input, run by whichever of MKL and oneDNN was measured faster here (_onednn_infers_faster). Under CPU autocast
    F.linear, which autocast casts (oneDNN's op has no autocast rule)."""
    if (x.device.type == 'cpu' and x.dtype == weight.dtype == torch.float32 and not torch.is_autocast_enabled('cpu')
            and torch.backends.mkldnn.enabled and _onednn_infers_faster(torch.get_num_threads())):
        return _onednn_linear(x, weight, bias)
    return F.linear(x, weight, bias)


def _plain_linear(module: nn.Module) -> bool:
    """An nn.Linear itself (not a subclass with its own forward) with no forward hooks: calling F.linear or a 1x1
    convolution on its weights instead of the module changes nothing a user can see."""
    hooks = nn.modules.module
    return type(module) is nn.Linear and not (module._forward_hooks or module._forward_pre_hooks
                                              or hooks._global_forward_hooks or hooks._global_forward_pre_hooks)


def map_linear(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """linear(x) for an nn.Linear on a CPU float32 (B, H, W, C) map or (B, windows, tokens, C) partition, run the
    fastest way measured for the mode:
    - eager inference: oneDNN's or MKL's GEMM (inference_linear), any input rank;
    - under torch.compile: as a 1x1 convolution of the map's NCHW view (no copy): inductor hands a linear to MKL's
      sgemm, which scales worse than oneDNN's convolution on 2 AMD cores (compiled FocalNet-T on a Zen 4: ~620 ms
      per forward as linears, ~540 ms as 1x1 convolutions, timm's 1x1 convolutions ~530 ms). Not under
      torch.export: an exported graph keeps the model's own ops;
    - eager training: as that convolution where measured faster on this machine at this thread count
      (_conv_trains_faster).
    Callers: the MLPs, every attention mixer's qkv and proj (window and channel attention's alone: Swin-T's training
    step 3-4% faster, compiled 5%; 2-core Zen 4), FocalNet's projections, patch merging. A subclass of nn.Linear or
    one with forward hooks is called as a module."""
    if not _plain_linear(linear) or x.device.type != 'cpu' or x.dtype != torch.float32:
        return linear(x)
    if eager_inference():
        return inference_linear(x, linear.weight, linear.bias)
    if x.dim() != 4:
        return linear(x)
    if torch.compiler.is_compiling():
        as_conv = not torch.compiler.is_exporting()
    else:
        as_conv = (torch.is_grad_enabled() and (x.requires_grad or linear.weight.requires_grad)
                   and not capturing_graph() and _conv_trains_faster(torch.get_num_threads()))
    return _as_conv(linear, x) if as_conv else linear(x)


class Mlp(_TimmMlp):
    """timm's Mlp (same arguments and keys) whose inference forward (eval, no grad) applies the activation in place
    on fc1's output (`apply_inplace`): one fewer tensor of the 4x-wide hidden size to allocate and stream through
    memory (Swin-T's first-stage MLP: 2x faster per batch slice on 2 CPU threads). Compiled or in training, its
    linears on (B, H, W, C) maps may run as 1x1 convolutions (`map_linear`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if eager_inference(self):
            x = apply_inplace(self.act, map_linear(self.fc1, x))
        else:
            x = self.act(map_linear(self.fc1, x))
        return self.drop2(map_linear(self.fc2, self.norm(self.drop1(x))))


class DWConvMlp(nn.Module):
    """fc1 -> 3x3 depthwise conv -> act -> fc2 on (B, H, W, C) maps (the ConvFFN of PVTv2 / LITv2)."""

    def __init__(self, in_features: int, hidden_features: Optional[int] = None, out_features: Optional[int] = None,
                 act_layer: Type[nn.Module] = nn.GELU, drop: float = 0., kernel_size: int = 3):
        super().__init__()
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = nn.Conv2d(hidden_features, hidden_features, kernel_size, padding=kernel_size // 2,
                                groups=hidden_features)
        self.act = act_layer()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = map_linear(self.fc1, x)
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = self.drop(self.act(x))
        return self.drop(map_linear(self.fc2, x))
