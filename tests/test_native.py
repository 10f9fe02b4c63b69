"""zoo's native CPU kernels against the PyTorch paths: the attention kernels (zoo/csrc/cpu_attention.cpp) as the
dense op's 'native' backend over strided q/k/v, broadcast biases and every value width it takes, and as the fused
window path of WindowAttention (shifted, padded, grid partitions); the tanh-form GELU (zoo/csrc/activations.cpp),
the one kernel that also runs in training (with its derivative). With autograd the layers never pick the others."""
import contextlib
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from zoo.layers import _native
from zoo.layers.activations import GELUTanh, gelu_tanh
from zoo.layers.attention import GridAttention, WindowAttention, dense_attention, force_backend

needs_native = pytest.mark.skipif(_native.library() is None, reason='native kernels unavailable (no AVX2/compiler)')


def _reference(q, k, v, bias=None, scale=None):
    with force_backend('reference', op='dense'):
        return dense_attention(q, k, v, bias=bias, scale=scale)


CASES = {  # q shape, k shape, value dim, bias shape
    'swin windows, bias + mask': ((2, 4, 3, 49, 32), (2, 4, 3, 49, 32), 32, (4, 3, 49, 49)),
    'per-head bias': ((3, 2, 49, 16), (3, 2, 49, 16), 16, (2, 49, 49)),
    'cross, odd sizes': ((2, 3, 13, 20), (2, 3, 37, 20), 24, (1, 3, 13, 37)),
    'one key block': ((1, 2, 5, 8), (1, 2, 5, 8), 8, None),
    '256 keys, dim 64': ((1, 2, 70, 64), (1, 2, 256, 64), 64, (70, 256)),
    'no leading dims': ((4, 9, 40), (4, 9, 40), 40, None),
}


@needs_native
@pytest.mark.parametrize('case', list(CASES))
def test_native_dense_attention_matches_reference(case):
    q_shape, k_shape, dv, bias_shape = CASES[case]
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(q_shape, generator=g), torch.randn(k_shape, generator=g)
    v = torch.randn(*k_shape[:-1], dv, generator=g)
    bias = None if bias_shape is None else 3 * torch.randn(bias_shape, generator=g)
    out = dense_attention(q, k, v, bias=bias, scale=0.3, backend='native')
    torch.testing.assert_close(out, _reference(q, k, v, bias, 0.3), atol=2e-6, rtol=1e-5)
    assert out.shape == (*q_shape[:-1], dv)


@needs_native
def test_native_dense_attention_reads_strided_views_and_masks(dense_timings):
    """q/k/v as the permuted views of a fused qkv projection, a -100 window mask repeating over the batch, and
    a bias broadcast over a middle dim (materialised); the result's token-major layout flattens for free."""
    B, nW, heads, N, d = 2, 3, 4, 49, 8
    qkv = torch.randn(B, nW, N, 3, heads, d)
    q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)
    mask = torch.zeros(nW, 1, N, N).masked_fill_(torch.rand(nW, 1, N, N) < 0.3, -100.)
    for bias in (torch.randn(heads, N, N) + mask, torch.randn(B, 1, heads, N, N)):
        out = dense_attention(q, k, v, bias=bias)
        torch.testing.assert_close(out, _reference(q, k, v, bias), atol=2e-6, rtol=1e-5)
    assert dense_attention.select(q, k, v, bias=bias) == 'native'
    assert out.transpose(2, 3).is_contiguous()


@needs_native
def test_native_is_inference_only(dense_timings):
    """With autograd the dispatch picks a differentiable backend (and its gradients match the reference); the native
    backend refuses to run even when forced."""
    q, k, v = (torch.randn(2, 3, 49, 8, requires_grad=True) for _ in range(3))
    assert dense_attention.select(q, k, v) == 'bmm'
    with torch.no_grad():
        assert dense_attention.select(q, k, v) == 'native'
    with pytest.raises(RuntimeError, match='does not support'):
        dense_attention(q, k, v, backend='native')
    grads = torch.autograd.grad(dense_attention(q, k, v).sum(), (q, k, v))
    torch.testing.assert_close(grads, torch.autograd.grad(_reference(q, k, v).sum(), (q, k, v)))


@needs_native
@pytest.mark.parametrize('layer, size', [
    (lambda: WindowAttention(64, 4, (7, 7), (3, 3)), (14, 21)),   # shifted, mask
    (lambda: WindowAttention(48, 3, (7, 7)), (10, 17)),           # padded, padding mask
    (lambda: WindowAttention(32, 2, (4, 4), rel_pos_bias=False), (8, 8)),  # DaViT: no bias, no mask
    (lambda: GridAttention(64, 2, (7, 7)), (14, 21)),             # MaxViT grid
])
def test_native_window_attention_matches_partitioned_path(layer, size):
    torch.manual_seed(0)
    m = layer().eval()
    x = torch.randn(2, *size, m.qkv.in_features)
    with torch.no_grad():
        assert m._native_runs(x)
        out = m(x)
        with force_backend('reference', op='dense'):
            assert not m._native_runs(x)
            ref = m(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):  # bfloat16 projections: the kernel steps aside
            assert not m._native_runs(x)
            autocast = m(x)
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)
    assert autocast.dtype == torch.bfloat16
    torch.testing.assert_close(autocast.float(), ref, atol=0.1, rtol=0.05)


def _subnormals(t):
    return int(((t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)).sum())


@pytest.mark.parametrize('native', [True, False])
@torch.no_grad()
def test_masked_keys_weigh_exactly_zero(native):
    """Padded and shifted windows with zero biases (timm's init): padding tokens' values are 0, so their outputs
    are made only of the masked keys' weights. Those must be exact zeros, not subnormal floats (which slowed
    every later matmul 10-100x on Intel: random-init Swin-L at 73x99 took 5 s instead of 0.4 s)."""
    torch.manual_seed(0)
    m = WindowAttention(64, 4, (7, 7), (3, 3)).eval()
    torch.nn.init.zeros_(m.qkv.bias)
    seen = []
    m.proj.register_forward_hook(lambda mod, inp, out: seen.append(_subnormals(inp[0])))
    x = torch.randn(2, 10, 17, 64)
    if native and _native.library() is None:
        pytest.skip('native kernels unavailable')
    with contextlib.nullcontext() if native else force_backend('reference', op='dense'):
        assert m._native_runs(x) == native
        m(x)
    assert seen == [0]


@needs_native
@torch.no_grad()
def test_subnormal_products_are_flushed_and_the_callers_float_mode_restored():
    """Scores 80 apart give weights near e^-80 (normal), whose products with small values are subnormal: the kernel
    flushes them (FTZ/DAZ while it runs; a term under 1.2e-38 is 0) and leaves the caller's MXCSR as it was."""
    q = torch.zeros(1, 1, 4, 8)
    k = torch.zeros(1, 1, 16, 8)
    bias = torch.zeros(1, 1, 4, 16)
    bias[..., 1:] = -80.
    v = torch.full((1, 1, 16, 8), 1e-4)
    v[..., 0, :] = 0.
    out = dense_attention(q, k, v, bias=bias, backend='native')
    assert not out.any()  # the true values, about 1e-39 each, flushed
    torch.testing.assert_close(out, _reference(q, k, v, bias=bias), atol=1e-37, rtol=0)
    assert _subnormals(torch.tensor([1e-38]) * 0.5) == 1  # this thread still computes subnormals


@needs_native
def test_traced_and_flop_counted_models_see_the_pytorch_ops():
    """The kernels are opaque to tracing and dispatch modes: a jit trace (fvcore's FLOP counter traces) and torch's
    FlopCounterMode must record the PyTorch path, not an empty tensor filled behind their back."""
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    m = WindowAttention(32, 2, (7, 7), (3, 3)).eval()
    x = torch.randn(1, 14, 14, 32)
    with torch.no_grad():
        expected = m(x)
        traced = torch.jit.trace(m, x, check_trace=False)
        with FlopCounterMode(display=False) as counter:
            counted = m(x)
    torch.testing.assert_close(traced(x), expected, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(counted, expected, atol=2e-6, rtol=1e-5)
    assert counter.get_total_flops() > 2 * 2 * 196 * 49 * 32  # the attention products are counted


@needs_native
def test_native_gelu_tanh_matches_torch():
    """Every float32 regime (tails where 1 + tanh rounds to 0, |x| ~ 0, a length that is not a multiple of 8),
    out of place and in place, on a channels-last map; within torch's own distance from float64."""
    x = torch.cat([torch.randn(100_003) * 4, torch.tensor([-1e4, -30., -9., -1e-6, 0., 1e-6, 9., 30., 1e4])])
    expected = F.gelu(x.double(), approximate='tanh')
    torch_err = (F.gelu(x, approximate='tanh').double() - expected).abs().max()
    with torch.inference_mode():
        out = gelu_tanh(x)
        assert (out.double() - expected).abs().max() <= 2 * torch_err
        image = torch.randn(2, 16, 9, 7).contiguous(memory_format=torch.channels_last)
        mapped = GELUTanh()(image)
        assert mapped.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(mapped, F.gelu(image, approximate='tanh'), atol=1e-6, rtol=1e-5)
        y = image.clone()
        assert gelu_tanh(y, inplace=True) is y
        torch.testing.assert_close(y, mapped, atol=0, rtol=0)


@needs_native
def test_native_gelu_tanh_training_matches_torch():
    """Eager training runs the native forward and derivative: both within torch's own distance from float64 (every
    regime, channels-last, a gradient in another memory order); double backward and graph capture run torch's."""
    x = torch.cat([torch.randn(100_003) * 4, torch.tensor([-1e4, -30., -9., -1e-6, 0., 1e-6, 9., 30., 1e4])])
    dy = torch.randn_like(x)
    x64 = x.double().requires_grad_()
    expected = torch.autograd.grad(F.gelu(x64, approximate='tanh'), x64, dy.double())[0]
    xt = x.clone().requires_grad_()
    torch_grad = torch.autograd.grad(F.gelu(xt, approximate='tanh'), xt, dy)[0]
    torch_err = (torch_grad.double() - expected).abs().max()
    xz = x.clone().requires_grad_()
    out = gelu_tanh(xz)
    assert out.grad_fn is not None and 'GELUTanhNative' in type(out.grad_fn).__name__
    grad = torch.autograd.grad(out, xz, dy)[0]
    assert (grad.double() - expected).abs().max() <= 2 * torch_err
    assert (out.double() - F.gelu(x.double(), approximate='tanh')).abs().max() < 1e-5
    image = torch.randn(2, 16, 9, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    dy_nchw = torch.randn(2, 16, 9, 7)  # the gradient arrives contiguous, the input channels-last
    (grad,) = torch.autograd.grad(GELUTanh()(image), image, dy_nchw)
    (want,) = torch.autograd.grad(F.gelu(image, approximate='tanh'), image, dy_nchw)
    torch.testing.assert_close(grad, want, atol=1e-6, rtol=1e-5)
    # double backward: torch's differentiable derivative
    x = torch.randn(50, dtype=torch.float32, requires_grad=True)
    (g1,) = torch.autograd.grad(gelu_tanh(x).sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad(g1.sum(), x)
    (w1,) = torch.autograd.grad(F.gelu(x, approximate='tanh').sum(), x, create_graph=True)
    (w2,) = torch.autograd.grad(w1.sum(), x)
    torch.testing.assert_close(g2, w2)
    with torch.no_grad():  # graph capture sees torch's op
        traced = torch.jit.trace(GELUTanh(), torch.randn(4, 8), check_trace=False)
    assert 'gelu' in str(traced.graph) and 'GELUTanhNative' not in str(traced.graph)


def test_gelu_tanh_keeps_strided_and_other_dtype_inputs_on_torch():
    for x in (torch.randn(10, 6).t().requires_grad_(), torch.randn(6, 10, dtype=torch.float64, requires_grad=True)):
        out = gelu_tanh(x)
        assert 'GELUTanhNative' not in type(out.grad_fn).__name__
        (grad,) = torch.autograd.grad(out.sum(), x)
        (want,) = torch.autograd.grad(F.gelu(x, approximate='tanh').sum(), x)
        torch.testing.assert_close(grad, want, atol=0, rtol=0)
    with torch.inference_mode():
        strided = torch.randn(10, 6).t()
        torch.testing.assert_close(gelu_tanh(strided), F.gelu(strided, approximate='tanh'), atol=0, rtol=0)


@needs_native
def test_dense_backend_follows_this_machines_timings(dense_timings):
    """Each call takes the backend measured fastest here in the bucket of its key count (the smallest calibrated
    count >= its keys): on an AVX-512 Xeon SDPA from 144 keys; in training the GEMMs only where they beat SDPA."""
    xeon = {k: {'native': 1., 'bmm': 3., 'sdpa': 2.} if k <= 100 else {'native': 2., 'bmm': 3., 'sdpa': 1.}
            for k in (16, 49, 100, 144, 196, 256)}
    dense_timings(inference=xeon, training={k: {'bmm': 2., 'sdpa': 1.} for k in xeon})
    with torch.no_grad():
        for keys, best in ((4, 'native'), (49, 'native'), (100, 'native'), (101, 'sdpa'), (196, 'sdpa')):
            x = torch.zeros(1, 2, keys, 8)
            assert dense_attention.select(x, x, x) == best, keys
        assert dense_attention.select(*[torch.zeros(1, 2, 49, 12)] * 3) == 'sdpa'  # native cannot, GEMMs lose
    x = torch.zeros(1, 2, 49, 8, requires_grad=True)
    assert dense_attention.select(x, x, x) == 'sdpa'


def test_dense_backend_timings_are_measured_once_and_cached(tmp_path, monkeypatch):
    """_native.measured: the measurement runs once per machine; a later process reads it back from the cache, and a
    file that does not parse is measured again and replaced."""
    monkeypatch.setenv('ZOO_NATIVE_CACHE', str(tmp_path))
    calls = []

    def measure():
        calls.append(1)
        return {'fastest': len(calls)}

    assert _native.measured('test', measure) == {'fastest': 1}
    assert _native.measured('test', measure) == {'fastest': 1} and len(calls) == 1
    cached, = (tmp_path / 'measured').glob('test-*.json')
    cached.write_text('{not json')
    assert _native.measured('test', measure) == {'fastest': 2}
    from zoo.layers.attention import dense
    with torch.inference_mode():  # the first dense call may come from inside it
        timings = dense._measure_dense_backends()
    assert set(timings['inference']) == set(timings['training']) == {str(k) for k in dense._CALIBRATED_KEYS}
    assert all(t > 0 for mode in timings.values() for row in mode.values() for t in row.values())


def test_first_measurement_inside_a_checkpointed_training_step(tmp_path, monkeypatch):
    """On a machine with nothing measured yet, the first training step may be a checkpointed one: the dense and
    map-linear timings then run inside checkpoint's forward, whose saved-tensor hooks must not take the timed
    steps' tensors (the recompute saved fewer and checkpoint raised). Gradients equal an unmeasured step's."""
    from zoo.layers import mlp
    from zoo.layers.attention import dense
    import timm
    torch.manual_seed(0)
    # DaViT: its window attention has no learned bias, which would take the GEMMs without asking the timings
    model = timm.create_model('zoo_davit_tiny', embed_dim=(16, 32), depths=(1, 1), num_heads=(1, 2), window_size=4,
                              num_classes=3, drop_path_rate=0.)
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()  # timings from this machine's cache
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    monkeypatch.setenv('ZOO_NATIVE_CACHE', str(tmp_path))
    dense._dense_timings.cache_clear()
    mlp._conv_trains_faster.cache_clear()
    try:
        model.set_grad_checkpointing(True)
        model(x).sum().backward()
        assert len(list((tmp_path / 'measured').glob('*.json'))) == 2  # both measured in this step
    finally:
        dense._dense_timings.cache_clear()
        mlp._conv_trains_faster.cache_clear()
    for got, want in zip((p.grad for p in model.parameters()), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_native_kernels_can_be_switched_off():
    """ZOO_NATIVE=0: no library, and the layers run their PyTorch paths."""
    code = ('import torch; from zoo.layers import _native; from zoo.layers.attention import dense_attention; '
            'q = torch.zeros(1, 2, 49, 8); assert _native.library() is None; '
            'assert dense_attention.select(q, q, q) != "native"')
    subprocess.run([sys.executable, '-c', code], check=True, env={**os.environ, 'ZOO_NATIVE': '0'})


def test_a_failed_build_warns_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv('ZOO_NATIVE_CACHE', str(tmp_path))
    monkeypatch.setenv('CXX', 'false')  # a "compiler" that always fails
    _native.library.cache_clear()
    try:
        if not _native._cpu_ok():
            pytest.skip('not an AVX2 CPU')
        with pytest.warns(UserWarning, match='native CPU kernels unavailable'):
            assert _native.library() is None
    finally:
        monkeypatch.undo()
        _native.library.cache_clear()
