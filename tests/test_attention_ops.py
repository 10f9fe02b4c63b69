"""Every dense-attention backend against the reference definition, forward and backward, over the call shapes
the mixers make: 4-D and 5-D (windows) inputs, per-head and per-window broadcast biases, no bias, v wider
than q/k."""
import pytest
import torch

from zoo.layers.attention import dense_attention
from zoo.layers.attention.dispatch import force_backend

CASES = {
    'heads': ((2, 3, 49, 8), (2, 3, 49, 8), None),
    'windows+bias': ((2, 4, 3, 49, 8), (2, 4, 3, 49, 8), (3, 49, 49)),
    'windows+mask': ((2, 4, 3, 49, 8), (2, 4, 3, 49, 8), (4, 1, 49, 49)),
    'cross+wide v': ((2, 2, 10, 8), (2, 2, 30, 8), (2, 1, 10, 30)),
}


@pytest.mark.parametrize('backend', ['sdpa', 'bmm'])
@pytest.mark.parametrize('case', list(CASES))
def test_dense_backends_match_reference(backend, case):
    q_shape, k_shape, bias_shape = CASES[case]
    g = torch.Generator().manual_seed(0)
    q = torch.randn(q_shape, generator=g, requires_grad=True)
    k = torch.randn(k_shape, generator=g, requires_grad=True)
    v = torch.randn(*k_shape[:-1], 2 * k_shape[-1] if 'wide' in case else k_shape[-1], generator=g, requires_grad=True)
    bias = None if bias_shape is None else torch.randn(bias_shape, generator=g, requires_grad=True)
    inputs = [t for t in (q, k, v, bias) if t is not None]
    results = []
    for name in ('reference', backend):
        with force_backend(name, op='dense'):
            y = dense_attention(q, k, v, bias=bias)
        results.append((y, *torch.autograd.grad(y.square().sum(), inputs)))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_short_cpu_self_attention_uses_bmm_when_training(dense_timings):
    """With autograd (training), short windows take the batched GEMMs where they measured faster (a Zen 3); 256 keys, cross attention over 98 keys and
    4-token windows take SDPA. Inference prefers the native kernel (tests/test_native.py)."""
    window = torch.zeros(1, 2, 49, 8, requires_grad=True)
    assert dense_attention.candidates(window, window, window)[0] == 'bmm'
    for q, k in [(torch.zeros(1, 2, 256, 8),) * 2, (window, torch.zeros(1, 2, 98, 8)), (torch.zeros(1, 2, 4, 8),) * 2]:
        q, k = q.requires_grad_(), k.requires_grad_()
        assert dense_attention.candidates(q, k, k)[0] == 'sdpa', (q.shape, k.shape)


def test_training_with_a_learned_bias_takes_bmm_where_sdpa_would_run_its_math_path(dense_timings):
    """SDPA's fused CPU kernel has no bias gradient: with a bias that requires grad (relative position tables) it
    runs its math path (the GEMMs plus a -inf scan of the scores), so such calls take the GEMMs whatever SDPA's fused
    kernel measured; a constant bias (a shift mask) keeps the measured choice."""
    dense_timings(training={k: {'bmm': 2., 'sdpa': 1.} for k in (16, 49, 100, 144, 196, 256)})
    q = torch.zeros(1, 2, 49, 8, requires_grad=True)
    learned, mask = torch.zeros(2, 49, 49, requires_grad=True), torch.zeros(2, 49, 49)
    assert dense_attention.candidates(q, q, q, bias=learned)[0] == 'bmm'
    assert dense_attention.candidates(q, q, q, bias=mask)[0] == 'sdpa'
    from torch.nn.attention import SDPBackend  # the premise, in this torch: SDPA's own choice for each bias
    assert SDPBackend(torch._fused_sdp_choice(q, q, q, learned[None])) == SDPBackend.MATH
    assert SDPBackend(torch._fused_sdp_choice(q, q, q, mask[None])) == SDPBackend.FLASH_ATTENTION


@pytest.mark.parametrize('mixer,map_size', [('window', (14, 14)), ('window', (7, 7)), ('window', (1, 9)),
                                            ('channel', (5, 6))])
def test_attention_projections_train_as_the_measured_map_linear(monkeypatch, mixer, map_size):
    """Window (Swin, DaViT, MaxViT) and channel (DaViT) attention run qkv and proj through map_linear: in eager
    training as 1x1 convolutions where this machine measured them faster. Forced each way, outputs and gradients
    agree, and both projections take the convolution; also with one window (7x7) or one-token-high windows (1x9),
    whose size-1 dims leave the convolution's output layout to oneDNN."""
    from zoo.layers import mlp
    from zoo.layers.attention.channel import ChannelAttention
    from zoo.layers.attention.window import WindowAttention
    torch.manual_seed(0)
    module = WindowAttention(16, 2, window_size=(7, 7)) if mixer == 'window' else ChannelAttention(16, 2)
    x = torch.randn(2, *map_size, 16)
    convs = []
    as_conv = mlp._as_conv
    monkeypatch.setattr(mlp, '_as_conv', lambda linear, t: convs.append(linear) or as_conv(linear, t))
    results = []
    for faster in (False, True):
        monkeypatch.setattr(mlp, '_conv_trains_faster', lambda threads, faster=faster: faster)
        module.zero_grad()
        inp = x.clone().requires_grad_()
        out = module(inp)
        out.square().sum().backward()
        results.append((out, inp.grad, module.qkv.weight.grad, module.proj.weight.grad))
    assert convs == [module.qkv, module.proj]
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
