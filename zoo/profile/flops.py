"""MAC counting with fvcore, plus handles for the ops fvcore does not know or miscounts.

Convention: one multiply-accumulate = one MAC; FLOPs = 2 x MACs. The papers in this zoo report "FLOPs"
that are MACs (fvcore/mmcv style), so `count_macs` is what their GFLOPs columns compare to. Like fvcore,
the count covers matmul-like ops (linear, conv, matmul/bmm/einsum, attention) and norms (fvcore's
convention: 5 per element with affine, 4 without); softmax, activations, adds and pooling are not counted.

Handles added here (fvcore either skips these ops or gets them wrong):

- `aten::scaled_dot_product_attention` and its backend variants (`_scaled_dot_product_flash_attention`,
  `..._flash_attention_for_cpu`, `..._efficient_attention`, `..._cudnn_attention`):
  q @ k^T plus attn @ v = batch * Lq * Lk * (d_qk + d_v). Masks/biases do not change the count (dense).
- `aten::matmul` / `aten::mm`: fvcore multiplies the first operand by the last dim of the second and so
  drops broadcast batch dims of the second operand (e.g. (N, N) @ (B, H, N, d)); counted here with
  broadcasting, 1-D operands included.
- `aten::bmm`, `aten::baddbmm`, `aten::addmm`: shape-based, so they hold under autocast too (the casts
  autocast inserts are not counted).
- `aten::einsum`: exact for any two-operand equation incl. '...' (product of all index sizes), numpy's
  optimal path for more operands (without allocating the operands, unlike fvcore).
- `torchvision::deform_conv2d`: counted as the dense conv of the same shape (as mmcv does); the bilinear
  sampling of the offsets is not counted.
- NATTEN ops (`natten::*` custom ops, `prim::PythonOp` autograd functions whose name mentions
  neighborhood attention): qk -> out.numel() * d, av -> attn.numel() * d_v, fused -> tokens * kernel
  area * (d_qk + d_v) with the kernel size read from the op's integer arguments.

When a model cannot be traced by torch.jit (e.g. it calls flex_attention), `count_macs(method='auto')`
falls back to torch's dispatch-level FlopCounterMode (the CPU SDPA variant is added to it here) and
converts its FLOPs to MACs; that counter does not count norms or deform_conv2d, so its totals are a little
lower than fvcore's. If that fails too (eager flex_attention does not run under FlopCounterMode in torch
2.14), the model is traced again with every zoo attention op forced to its 'reference' backend. The
method used is part of `flop_report`.
"""
from __future__ import annotations

import contextlib
import math
import re
import string
import warnings
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

__all__ = ['count_macs', 'count_params', 'flop_report', 'OP_HANDLES', 'CONVENTION', 'make_inputs', 'meta_parameters',
           'materialize_zeros']

CONVENTION = 'MACs (one multiply-accumulate = 1); FLOPs = 2 x MACs; papers\' "FLOPs" columns are MACs'


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


# --- attention -------------------------------------------------------------------------------------------
def _sdpa_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """q @ k^T and attn @ v: (batch dims) * Lq * Lk * (d_qk + d_v); q/k/v: (..., L, d)."""
    q, k, v = (get_shape(i) for i in inputs[:3])
    return _prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])


# --- matmul family ---------------------------------------------------------------------------------------
def _matmul_shapes_macs(a: Sequence[int], b: Sequence[int]) -> int:
    a, b = list(a), list(b)
    if len(a) == 1 and len(b) == 1:
        return a[0]
    if len(a) == 1:  # (k) @ (..., k, m)
        return _prod(b[:-2]) * b[-2] * b[-1]
    if len(b) == 1:  # (..., n, k) @ (k)
        return _prod(a[:-1]) * a[-1]
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return _prod(batch) * a[-2] * a[-1] * b[-1]


def _matmul_macs(inputs: List[Any], outputs: List[Any]) -> int:
    a, b = (get_shape(i) for i in inputs[:2])
    return _matmul_shapes_macs(a, b)


def _addmm_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """addmm / baddbmm(self, a, b, ...): the product a @ b (the add is not counted)."""
    a, b = (get_shape(i) for i in inputs[1:3])
    return _matmul_shapes_macs(a, b)


def _einsum_macs(inputs: List[Any], outputs: List[Any]) -> int:
    equation = inputs[0].toIValue().replace(' ', '')
    shapes = [get_shape(v) for v in inputs[1].node().inputs()]
    return einsum_macs(equation, shapes)


def einsum_macs(equation: str, shapes: Sequence[Sequence[int]]) -> int:
    """MACs of `torch.einsum(equation, *operands)` for operands of `shapes` ('...' allowed)."""
    lhs, _, rhs = equation.partition('->')
    terms = lhs.split(',')
    free = [c for c in string.ascii_letters if c not in equation]
    if '...' in equation:  # expand the ellipsis into explicit letters (right-aligned, broadcast)
        n_ell = max(len(s) - len(t.replace('...', '')) for t, s in zip(terms, shapes) if '...' in t)
        ell = ''.join(free[:n_ell])
        terms = [t.replace('...', ell[n_ell - (len(s) - len(t.replace('...', ''))):]) for t, s in zip(terms, shapes)]
        rhs = rhs.replace('...', ell) if rhs else None
    sizes: Dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        for c, s in zip(term, shape):
            sizes[c] = max(sizes.get(c, 1), int(s))
    if len(terms) <= 2:
        # every combination of all indices is one multiply (and one accumulate into the output)
        return _prod(sizes.values())
    views = [np.lib.stride_tricks.as_strided(np.zeros(1), shape=[sizes[c] for c in t], strides=[0] * len(t))
             for t in terms]
    eq = ','.join(terms) + ('->' + rhs if rhs is not None else '')
    info = np.einsum_path(eq, *views, optimize='optimal')[1]
    for line in info.split('\n'):
        if 'optimized flop' in line.lower():
            return int(float(line.split(':')[-1]) / 2)
    return _prod(sizes.values()) * (len(terms) - 1)


# --- torchvision -----------------------------------------------------------------------------------------
def _deform_conv2d_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """torchvision::deform_conv2d(input, weight, offset, mask, bias, ...): out.numel() * Cin/groups * kh * kw."""
    weight = get_shape(inputs[1])
    return _prod(get_shape(outputs[0])) * _prod(weight[1:])


# --- NATTEN ----------------------------------------------------------------------------------------------
def _int_args(inputs: List[Any]) -> List[List[int]]:
    out = []
    for i in inputs:
        try:
            value = i.toIValue()
        except Exception:  # not a constant
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            out.append([value])
        elif isinstance(value, (list, tuple)) and value and all(isinstance(x, int) for x in value):
            out.append(list(value))
    return out


def _natten_macs(name: str, inputs: List[Any], outputs: List[Any]) -> Optional[int]:
    shapes = [get_shape(i) for i in inputs]
    tensors = [s for s in shapes if s]
    lname = name.lower()
    if 'backward' in lname:
        return None
    if 'qk' in lname and 'rpb' not in lname and outputs:  # attn = q k^T over the neighborhood: (..., K)
        return _prod(get_shape(outputs[0])) * tensors[0][-1]
    if 'av' in lname:  # out = attn v: attn (..., K), v (..., d)
        return _prod(tensors[0]) * tensors[1][-1]
    if len(tensors) >= 3:  # fused: q, k, v (B, *spatial, heads, d) or (B, heads, *spatial, d)
        q, v = tensors[0], tensors[2]
        dims = 3 if '3d' in lname else 2 if '2d' in lname else 1
        kernel = next((a for a in _int_args(inputs) if len(a) == dims), None)
        if kernel is None:
            return None
        return _prod(q[:-1]) * _prod(kernel) * (q[-1] + v[-1])
    return None


def _natten_op(name: str):
    def handle(inputs, outputs):
        macs = _natten_macs(name, inputs, outputs)
        if macs is None:
            warnings.warn(f'zoo.profile: cannot count {name}; counted as 0')
            return 0
        return macs
    return handle


_NEIGHBORHOOD = re.compile(r'(natten|neighborhood|na[123]d)', re.I)


def _python_op_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """Autograd functions traced as prim::PythonOp: counted when they are NATTEN neighborhood attention."""
    node = outputs[0].node() if outputs else None
    name = node.pyname() if node is not None and hasattr(node, 'pyname') else ''
    if _NEIGHBORHOOD.search(name):
        macs = _natten_macs(name, inputs, outputs)
        if macs is not None:
            return macs
    if name:
        warnings.warn(f'zoo.profile: autograd function {name} not counted')
    return 0


OP_HANDLES = {
    'aten::scaled_dot_product_attention': _sdpa_macs,
    'aten::_scaled_dot_product_flash_attention': _sdpa_macs,
    'aten::_scaled_dot_product_flash_attention_for_cpu': _sdpa_macs,
    'aten::_scaled_dot_product_efficient_attention': _sdpa_macs,
    'aten::_scaled_dot_product_cudnn_attention': _sdpa_macs,
    'aten::matmul': _matmul_macs,
    'aten::mm': _matmul_macs,
    'aten::bmm': _matmul_macs,
    'aten::baddbmm': _addmm_macs,
    'aten::addmm': _addmm_macs,
    'aten::einsum': _einsum_macs,
    'torchvision::deform_conv2d': _deform_conv2d_macs,
    'prim::PythonOp': _python_op_macs,
}

# NATTEN's torch custom ops (names as registered by natten 0.1x-0.2x); harmless when natten is absent
for _dims in ('1d', '2d', '3d'):
    for _kind in ('', 'qk', 'av', 'qkrpb'):
        _name = f'natten::na{_dims}' + (f'_{_kind}' if _kind else '')
        OP_HANDLES[_name] = _natten_op(_name)
        OP_HANDLES[_name + '_forward'] = _natten_op(_name + '_forward')


# ops fvcore skips that are only elementwise / data movement: not counted, not reported as missing
_ELEMENTWISE = re.compile(
    r'^aten::(add|sub|mul|div|rsub|neg|pow|sqrt|rsqrt|exp|log|sigmoid|tanh|relu|gelu|silu|hardswish|hardsigmoid|'
    r'softmax|log_softmax|dropout|feature_dropout|mean|sum|amax|max|min|clamp|abs|sign|where|masked_fill|'
    r'roll|pad|constant_pad_nd|view|reshape|permute|transpose|flatten|unflatten|contiguous|expand|repeat|'
    r'split|chunk|unbind|select|slice|index|gather|cat|stack|narrow|squeeze|unsqueeze|to|type_as|zeros|ones|'
    r'full|arange|linspace|meshgrid|clone|copy_|fill_|detach|size|numel|lt|gt|le|ge|eq|ne|floor|ceil|round|'
    r'floor_divide|remainder|cumsum|norm|linalg_vector_norm|avg_pool2d|max_pool2d|adaptive_max_pool2d|'
    r'upsample_bicubic2d|pixel_shuffle|pixel_unshuffle|unfold|im2col|col2im|erf|square|reciprocal|'
    r'einsum_path|_autocast_to_reduced_precision|_autocast_to_full_precision|layer_norm|scalar_tensor|'
    r'new_zeros|new_ones|new_full|embedding|topk|sort|argsort|argmax|std|var|var_mean|mish|softplus|'
    r'elu|leaky_relu|hardtanh|relu6|prelu|logsumexp|bitwise_not|logical_not|any|all|masked_select|'
    r'repeat_interleave|tile|flip|rot90|diag|tril|triu|one_hot|bernoulli|rand|randn|empty|empty_like|'
    r'zeros_like|ones_like|full_like|alias|lift_fresh|batch_norm|group_norm|instance_norm|'
    r'channel_shuffle|_unsafe_view|as_strided|index_select|index_put_|scatter|scatter_add|'
    r'adaptive_avg_pool1d|avg_pool1d|max_pool1d|mT|t|matrix_H|numpy_T|upsample_nearest1d|'
    r'upsample_linear1d|upsample_trilinear3d|grid_sampler)_?$|^prim::|^aten::Int|^aten::Float|^aten::ScalarImplicit'
)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def meta_parameters():
    """Modules built inside keep their parameters on the meta device: no memory and no initialisation (the init
    functions run on meta tensors, which costs nothing), so `count_params` of a big variant is instant. Buffers
    (relative position indices, masks) stay real. Not `with torch.device('meta')`: model constructors compute
    on tensors (drop-path rates via .tolist()), which meta tensors cannot do. `materialize_zeros` then gives the
    parameters zero-filled storage where a model must run with values that do not matter (MAC counting: the
    count depends on shapes only)."""
    register = nn.Module.register_parameter

    def register_on_meta(module, name, param):
        register(module, name, param)
        if param is not None and param.device.type != 'meta':
            module._parameters[name] = type(param)(param.to('meta'), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def materialize_zeros(model: nn.Module, device='cpu') -> nn.Module:
    """Give `model`'s meta parameters zero-filled storage on `device` (in place; other tensors untouched)."""
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None and p.device.type == 'meta':
                module._parameters[name] = type(p)(torch.zeros(p.shape, dtype=p.dtype, device=device),
                                                   requires_grad=p.requires_grad)
    return model


def make_inputs(model: nn.Module, input_size: Union[int, Sequence[int]] = 224, batch_size: int = 1,
                device=None, dtype=None) -> torch.Tensor:
    """A random (batch, C, H, W) image batch for `input_size` ((C,) H, W or an int) on the model's device."""
    if isinstance(input_size, int):
        input_size = (getattr(model, 'in_chans', 3), input_size, input_size)
    elif len(input_size) == 2:
        input_size = (getattr(model, 'in_chans', 3), *input_size)
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else 'cpu'
    return torch.randn(batch_size, *input_size, device=device, dtype=dtype)


def _fvcore(model: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(model, inputs).set_op_handle(**OP_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
    return analysis


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    b, h, lq, d = query_shape
    return 2 * b * h * lq * key_shape[-2] * (d + value_shape[-1])


def _dispatch_counts(model: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> Dict[str, int]:
    """MACs per op with torch's FlopCounterMode (FLOPs / 2), for models torch.jit cannot trace."""
    from torch.utils.flop_counter import FlopCounterMode
    aten = torch.ops.aten
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(*inputs)
    return {str(op).split('.')[-1]: int(n) // 2 for op, n in counter.get_flop_counts().get('Global', {}).items()}


@torch.no_grad()
def flop_report(model: nn.Module, input_size: Union[int, Sequence[int]] = 224, batch_size: int = 1,
                inputs: Optional[Tuple[torch.Tensor, ...]] = None, method: str = 'auto') -> Dict[str, Any]:
    """MACs of one forward pass, per image, with the breakdown by operator and the ops left uncounted.

    method: 'fvcore' (torch.jit trace + handles), 'dispatch' (torch FlopCounterMode), or 'auto' (fvcore,
    falling back to dispatch if the model cannot be traced). `inputs` overrides `input_size`/`batch_size`
    (a tensor or tuple of tensors; the count is then for the whole call, not per image).
    """
    per_image = inputs is None
    if inputs is None:
        inputs = (make_inputs(model, input_size, batch_size),)
    elif isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    was_training = model.training
    model.eval()
    try:
        used, by_op, uncounted, error = method, {}, [], None
        if method in ('auto', 'fvcore'):
            try:
                analysis = _fvcore(model, inputs)
                by_op = dict(analysis.by_operator())
                uncounted = sorted(op for op in analysis.unsupported_ops() if not _ELEMENTWISE.search(op))
                used = 'fvcore'
            except Exception as e:  # untraceable model (flex_attention, data-dependent control flow)
                if method == 'fvcore':
                    raise
                error = f'{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ""}'
        if used != 'fvcore':
            try:
                by_op = _dispatch_counts(model, inputs)
                used = 'dispatch'
            except Exception as e:  # e.g. eager flex_attention under FlopCounterMode
                if method == 'dispatch':
                    raise
                error = (error + '; ' if error else '') + f'dispatch: {type(e).__name__}'
                # last resort: the zoo ops' readable 'reference' backends, which fvcore can trace
                from ..layers.attention import force_backend
                with force_backend('reference'):
                    analysis = _fvcore(model, inputs)
                    by_op = dict(analysis.by_operator())
                uncounted = sorted(op for op in analysis.unsupported_ops() if not _ELEMENTWISE.search(op))
                used = 'fvcore-reference-backends'
    finally:
        model.train(was_training)
    total = int(sum(by_op.values()))
    if per_image:
        total //= batch_size
        by_op = {k: int(v) // batch_size for k, v in by_op.items()}
    report = {
        'macs': total, 'gmacs': total / 1e9, 'gflops': 2 * total / 1e9, 'convention': CONVENTION,
        'method': used, 'by_operator': {k: int(v) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
        'uncounted_ops': uncounted,
    }
    if error:
        report['fvcore_error'] = error
    return report


def count_macs(model: nn.Module, input_size: Union[int, Sequence[int]] = 224, batch_size: int = 1,
               method: str = 'auto') -> int:
    """MACs of one forward pass at `input_size` ((C,) H, W or an int), per image."""
    return flop_report(model, input_size, batch_size, method=method)['macs']
