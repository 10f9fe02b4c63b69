"""Generalized neighborhood attention (issue 21 section 3): na1d / na2d / na3d with NATTEN 0.21's stride and per-axis
is_causal, plus the relative position bias, on every backend. Each backend is held to the reference (forward and
backward, rpb gradients included), the reference and the cpu path to NATTEN's own CPU results (no rpb: NATTEN >= 0.20
has none), and blocked attention (stride = kernel) to the window mixer."""
import functools
import itertools
import math
import warnings

import pytest
import torch

from zoo.layers.attention import WindowAttention, force_backend, na1d, na2d, na3d, neighborhood_attention
from zoo.layers.attention.neighborhood import _na_tiled, _plan, _tile_mask, _tile_size, natten_available

NA = {1: na1d, 2: na2d, 3: na3d}

# (map, kernel, dilation, stride, is_causal): 1-D / 2-D / 3-D; strides 1 .. kernel, odd and even, per axis; causal on
# some axes; dilation groups of unequal length; windows shifted at the borders; stride groups cut by the border
CASES = [
    ((13,), 5, 2, 2, True),
    ((13,), 5, 2, 3, False),
    ((17,), 4, 1, 4, False),
    ((11, 9), (3, 5), (2, 1), (2, 3), (False, True)),
    ((11, 9), (3, 5), (2, 1), (3, 4), (True, False)),
    ((10, 12), 4, 1, 2, True),
    ((14, 14), 7, 1, 7, False),
    ((6, 7, 9), (3, 3, 4), (2, 1, 2), (1, 2, 3), (True, False, False)),
    ((6, 7, 9), (3, 3, 4), (2, 1, 2), (3, 2, 4), (False, True, False)),
    ((5, 6, 6), 3, 1, 2, True),
]
def _id(case):
    def fmt(x):
        x = x if isinstance(x, tuple) else (x,)
        return 'x'.join(str(int(v)) for v in x)
    shape, kernel, dilation, stride, causal = case
    return f'{len(shape)}d-{fmt(shape)}-k{fmt(kernel)}-d{fmt(dilation)}-s{fmt(stride)}-causal{fmt(causal)}'


IDS = [_id(c) for c in CASES]


def _inputs(shape, kernel, rpb, heads=2, d=4, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, *shape, heads, d, generator=g, dtype=dtype).requires_grad_() for _ in range(3))
    kernel = (kernel,) * len(shape) if isinstance(kernel, int) else kernel
    table = torch.randn(heads, *(2 * x - 1 for x in kernel), generator=g, dtype=dtype).requires_grad_() if rpb else None
    return q, k, v, table


def _run(backend, q, k, v, rpb, kernel, dilation, stride, causal):
    with force_backend(backend, op='neighborhood'):
        out = NA[q.ndim - 3](q, k, v, kernel, dilation, rpb=rpb, stride=stride, is_causal=causal)
    leaves = [t for t in (q, k, v, rpb) if t is not None]
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.shape[-1])).sum(), leaves)
    return out, grads


def _assert_matches_reference(backend, case, rpb):
    shape, kernel, dilation, stride, causal = case
    q, k, v, table = _inputs(shape, kernel, rpb)
    ref, ref_grads = _run('reference', q, k, v, table, kernel, dilation, stride, causal)
    out, grads = _run(backend, q, k, v, table, kernel, dilation, stride, causal)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=0)


def _naive(q, k, v, rpb, kernel, dilation, stride, causal):
    """Per-query loop over NATTEN 0.21's rules written out (leader, window start, causal range), for the reference
    itself and for rpb, which NATTEN cannot check."""
    B, *spatial, heads, d = q.shape
    nd = len(spatial)
    out = torch.empty_like(q)
    for pos in torch.cartesian_prod(*(torch.arange(s) for s in spatial)).view(-1, nd).tolist():
        ranges = []
        for i, L, kk, dl, s, c in zip(pos, spatial, kernel, dilation, stride, causal):
            g, n = i % dl, i // dl
            glen = len(range(g, L, dl))
            if c:
                leader = min(n // s * s + s - 1, glen - 1)
                steps = list(range(max(leader - kk + 1, 0), n + 1))
            else:
                leader = min(n // s * s + s // 2, glen - 1)
                start = min(max(leader - kk // 2, 0), glen - kk)
                steps = list(range(start, start + kk))
            ranges.append([(g + m * dl, m - n + kk - 1) for m in steps])
        keys = torch.tensor(list(itertools.product(*ranges))).view(-1, nd, 2)
        kv_index = (slice(None), *keys[:, :, 0].T)
        logits = torch.einsum('bhd,bkhd->bhk', q[(slice(None), *pos)] * d ** -0.5, k[kv_index])
        if rpb is not None:
            logits = logits + rpb[(slice(None), *keys[:, :, 1].T)]
        out[(slice(None), *pos)] = torch.einsum('bhk,bkhd->bhd', logits.softmax(-1), v[kv_index])
    return out


def _full(case):
    shape, kernel, dilation, stride, causal = case
    nd = len(shape)
    return [x if isinstance(x, tuple) else (x,) * nd for x in (kernel, dilation, stride, causal)]


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_reference_is_natten_semantics_with_rpb(case):
    q, k, v, rpb = (t.detach() for t in _inputs(case[0], case[1], True))
    with torch.no_grad():
        out = NA[q.ndim - 3](q, k, v, case[1], case[2], rpb=rpb, stride=case[3], is_causal=case[4])
        with force_backend('reference', op='neighborhood'):
            ref = NA[q.ndim - 3](q, k, v, case[1], case[2], rpb=rpb, stride=case[3], is_causal=case[4])
    want = _naive(q, k, v, rpb, *_full(case))
    torch.testing.assert_close(ref, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)  # the default (cpu) path


@pytest.mark.parametrize('rpb', [False, True])
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_cpu_backend_matches_reference(case, rpb):
    _assert_matches_reference('cpu', case, rpb)


# eager flex on CPU: each call is traced by dynamo (~1 s), so a subset with rpb
@pytest.mark.filterwarnings('ignore:flex_attention called without torch.compile')
@pytest.mark.parametrize('case', [CASES[i] for i in (0, 4, 5, 8)], ids=[IDS[i] for i in (0, 4, 5, 8)])
def test_flex_backend_matches_reference(case, flex_backward_on_cpu):
    _assert_matches_reference('flex', case, True)


def test_gradcheck_cpu_float64():
    for case in (((9,), 3, 2, 2, True), ((5, 4, 6), (3, 2, 3), (1, 2, 1), (2, 1, 3), (True, False, False))):
        shape, kernel, dilation, stride, causal = case
        q, k, v, rpb = _inputs(shape, kernel, True, heads=1, d=2, dtype=torch.float64)
        q, k, v = (t[:1].detach().requires_grad_() for t in (q, k, v))
        with force_backend('cpu', op='neighborhood'):
            assert torch.autograd.gradcheck(
                lambda *t: NA[len(shape)](*t[:3], kernel, dilation, rpb=t[3], stride=stride, is_causal=causal),
                (q, k, v, rpb))


# NATTEN's CPU path takes ~4 s a call here (its flex is traced by dynamo): four cases by default, the rest slow
NATTEN_DEFAULT = (0, 4, 6, 8)


@pytest.mark.skipif(not natten_available(), reason='natten not installed')
@pytest.mark.parametrize('case', [c if i in NATTEN_DEFAULT else pytest.param(c, marks=pytest.mark.slow)
                                  for i, c in enumerate(CASES)], ids=IDS)
def test_natten_parity(case):
    """Reference and cpu path against natten.na{1,2,3}d on CPU (NATTEN's flex path: forward only, no rpb); the zoo
    'natten' backend forced on CPU runs the same call."""
    import natten
    shape, kernel, dilation, stride, causal = case
    q, k, v, _ = (None if t is None else t.detach() for t in _inputs(shape, kernel, False, d=8))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        want = getattr(natten, f'na{len(shape)}d')(q, k, v, kernel_size=kernel, dilation=dilation, stride=stride,
                                                   is_causal=causal)
        for backend in ('reference', 'cpu', 'natten'):
            with force_backend(backend, op='neighborhood'), torch.no_grad():
                out = NA[len(shape)](q, k, v, kernel, dilation, stride=stride, is_causal=causal)
            torch.testing.assert_close(out, want, atol=1e-5, rtol=0, msg=lambda m: f'{backend}: {m}')


@pytest.mark.parametrize('window,H,W', [(4, 8, 12), ((3, 5), 9, 10)])
def test_stride_equal_to_kernel_is_the_window_mixer(window, H, W):
    """na2d(kernel_size=w, stride=w) with the Swin table as rpb == WindowAttention on non-shifted windows. Swin
    indexes its table by query - key offsets, neighborhood attention's rpb by key - query: the table flips."""
    torch.manual_seed(0)
    wh, ww = (window, window) if isinstance(window, int) else window
    heads, d = 2, 4
    m = WindowAttention(heads * d, heads, window_size=(wh, ww)).eval()
    with torch.no_grad():
        m.rel_pos.relative_position_bias_table.normal_()
        x = torch.randn(2, H, W, heads * d)
        want = m(x)
        q, k, v = m.qkv(x).view(2, H, W, 3, heads, d).unbind(3)
        rpb = m.rel_pos.relative_position_bias_table.view(2 * wh - 1, 2 * ww - 1, heads).permute(2, 0, 1).flip(1, 2)
        for backend in ('reference', 'cpu'):
            with force_backend(backend, op='neighborhood'):
                out = na2d(q, k, v, (wh, ww), stride=(wh, ww), rpb=rpb)
            torch.testing.assert_close(m.proj(out.reshape(2, H, W, -1)), want, atol=1e-5, rtol=0)
    # the tiled path's tiles are then the windows: no masked-out key at all
    tile = _tile_size((wh, ww), (wh, ww), (H, W))
    axes = _plan((H, W), (wh, ww), (1, 1), (wh, ww), (False, False), tile, torch.device('cpu'))[3]
    assert tile == (wh, ww) and torch.isfinite(_tile_mask(None, torch.float32, torch.device('cpu'), axes)).all()


@pytest.mark.parametrize('case', [((16, 16), 5, 1, 2, (True, False)), ((6, 8, 8), 3, (1, 2, 1), (1, 3, 2), False)])
def test_cpu_path_memory_is_linear_in_tokens(case):
    """The tiled path's only O(N) temporaries are its index tables and the per-tile mask: (tiles, heads, tile,
    box) with a box fixed by the kernel, stride and tile. Doubling every side multiplies that mask by 2^n (the tokens),
    not 4^n (an N x N score matrix)."""
    shape, kernel, dilation, stride, causal = case
    nd = len(shape)
    kernel, dilation, stride, causal = _full(case)
    sizes = []
    for scale in (1, 2):
        spatial = tuple(s * scale for s in shape)
        groups = [-(-s // d) for s, d in zip(spatial, dilation)]
        tile = _tile_size(kernel, stride, groups)
        axes = _plan(spatial, kernel, dilation, stride, causal, tile, torch.device('cpu'))[3]
        sizes.append(_tile_mask(None, torch.float32, torch.device('cpu'), axes).numel())
    assert sizes[1] <= sizes[0] * 2 ** nd * 1.2


def test_errors_name_the_bad_argument():
    q = torch.randn(1, 8, 8, 2, 4)
    with pytest.raises(ValueError, match='stride must not exceed the kernel size'):
        na2d(q, q, q, 3, stride=4)
    with pytest.raises(ValueError, match='is_causal must be one bool or 2'):
        na2d(q, q, q, 3, is_causal=(True, False, True))
    with pytest.raises(ValueError, match='stride must be one int or 2'):
        na2d(q, q, q, 3, stride=(1, 1, 1))
    with pytest.raises(ValueError, match=r'na3d expects \(B, T, H, W, heads, d\)'):
        na3d(q, q, q, 3)
    with pytest.raises(ValueError, match='q, k, v of one shape'):
        na2d(q, q[:, :4], q, 3)
    with pytest.raises(ValueError, match=r'rpb must have shape \(heads, 2k-1, 2k-1, 2k-1\)'):
        na3d(q[:, None].expand(1, 3, 8, 8, 2, 4), q[:, None].expand(1, 3, 8, 8, 2, 4),
             q[:, None].expand(1, 3, 8, 8, 2, 4), 3, rpb=torch.zeros(2, 5, 5))
    with pytest.raises(ValueError, match='size >= kernel_size \\* dilation = 3 \\* 3 on axis 1'):
        na2d(q, q, q, 3, (1, 3))


def test_dispatch():
    q = torch.randn(1, 6, 6, 6, 2, 4)
    rpb = torch.zeros(2, 5, 5, 5)
    args = (q, q, q, (3, 3, 3), (1, 1, 1), None, 0.5, (2, 1, 3), (True, False, False))
    assert neighborhood_attention.select(*args) == 'cpu'  # off-GPU default, with or without rpb
    assert neighborhood_attention.select(*args[:5], rpb, *args[6:]) == 'cpu'
    natten_backend = neighborhood_attention.backends['natten']
    assert natten_backend.runs(*args) is natten_available()  # forced on CPU: NATTEN's CPU path
    assert natten_backend.runs(*args[:5], rpb, *args[6:]) is False  # NATTEN has no rpb
    grad_q = q.clone().requires_grad_()
    assert natten_backend.runs(grad_q, *args[1:]) is False  # nor a backward on CPU
    if natten_available():
        with force_backend('natten', op='neighborhood'), pytest.raises(RuntimeError, match="'natten' does not"):
            na3d(grad_q, q, q, 3)
    # the tiled path is also what runs without a dispatch (e.g. a caller's own tile)
    out = _na_tiled(*args[:7], stride=args[7], is_causal=args[8], tile=(2, 2, 3))
    torch.testing.assert_close(out, na3d(q, q, q, 3, scale=0.5, stride=(2, 1, 3), is_causal=(True, False, False)))


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.slow  # one inductor compile: ~20 s on 2 busy cores
def test_compiled_flex_forward_on_cpu_matches_reference(fresh_dynamo):
    """The compiled flex kernel (the CUDA path's mask_mod, BlockMask and N-D rpb score_mod) on a 3-D strided,
    partly causal, dilated case."""
    case = CASES[8]
    shape, kernel, dilation, stride, causal = case
    q, k, v, rpb = (t.detach() for t in _inputs(shape, kernel, True, d=8))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings('error', message='.*without torch.compile')  # the compiled kernel, not eager flex
        want = neighborhood_attention(q, k, v, kernel, dilation, rpb, 0.4, stride, causal, backend='reference')
        out = neighborhood_attention(q, k, v, kernel, dilation, rpb, 0.4, stride, causal, backend='flex')
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)


def test_compiles_without_graph_breaks():
    """fullgraph torch.compile of the default (tiled) path with stride and causal: the plan's torch.unique enters
    the graph as a constant."""
    torch._dynamo.reset()
    q, k, v, rpb = (t.detach() for t in _inputs((9, 10), 3, True))

    def fn(q, k, v):
        return na2d(q, k, v, 3, (1, 2), rpb=rpb, stride=(2, 3), is_causal=(True, False))

    with torch.no_grad():
        out = torch.compile(fn, backend='aot_eager', fullgraph=True, dynamic=False)(q, k, v)
        torch.testing.assert_close(out, fn(q, k, v), atol=1e-6, rtol=0)
    torch._dynamo.reset()


@pytest.mark.parametrize('case', [CASES[i] for i in (0, 5, 8)], ids=[IDS[i] for i in (0, 5, 8)])
def test_flex_block_mask_covers_the_neighbourhood(case):
    """The BlockMask (only the compiled kernel reads it) marks exactly the 128 x 128 blocks that hold a neighbour
    pair of the reference, in the flex path's (group-major) token order."""
    from torch.nn.attention.flex_attention import create_mask
    from zoo.layers.attention.neighborhood import _axis_neighbors, _flex_plan, _raster, _spread
    shape = case[0]
    kernel, dilation, stride, causal = _full(case)
    N, K = math.prod(shape), math.prod(kernel)
    _, block_mask, perm, _ = _flex_plan(shape, kernel, dilation, stride, causal, torch.device('cpu'))
    axes = [_axis_neighbors(*a) for a in zip(shape, kernel, dilation, stride, causal)]
    keys = _raster([a[0] for a in axes], shape).reshape(N, K)
    valid = functools.reduce(torch.logical_and, _spread([a[2] for a in axes])).reshape(N, K)
    want = torch.zeros(N, N, dtype=torch.bool)
    want[torch.arange(N)[:, None].expand(N, K)[valid], keys[valid]] = True
    if perm is not None:
        want = want[perm][:, perm]
    assert torch.equal(create_mask(block_mask.mask_mod, 1, 1, N, N, device='cpu')[0, 0], want)
    bq, bk = block_mask.BLOCK_SIZE
    padded = torch.zeros(-(-N // bq) * bq, -(-N // bk) * bk, dtype=torch.bool)
    padded[:N, :N] = want
    blocks = padded.view(padded.shape[0] // bq, bq, -1, bk).any(3).any(1)
    assert torch.equal(block_mask.to_dense()[0, 0].bool(), blocks)
