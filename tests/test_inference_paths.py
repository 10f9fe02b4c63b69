"""Eager inference shortcuts in the shared layers: they must give the plain forward's values and follow the
weights when those change."""
import pytest
import torch
import torch.nn as nn

from zoo.layers.conv import conv_bn


def _randomize_bn(m):
    bn = m.bn
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)


def test_conv_bn_folds_in_eval_and_follows_weight_changes():
    torch.manual_seed(0)
    m = conv_bn(8, 16, 3, stride=2, act_layer=nn.ReLU).eval()
    _randomize_bn(m)
    x = torch.randn(2, 8, 11, 13)

    def plain_and_folded():
        plain = m(x).detach()  # grad enabled: conv -> BN -> ReLU
        with torch.no_grad():
            return plain, m(x)

    plain, folded = plain_and_folded()
    torch.testing.assert_close(folded, plain, atol=1e-5, rtol=1e-5)
    assert m._folded.key is not None, 'the eval forward did not take the folded path'
    # in-place changes (load_state_dict, optimizer steps, statistics) must rebuild the fold
    other = conv_bn(8, 16, 3, stride=2, act_layer=nn.ReLU)
    _randomize_bn(other)
    m.load_state_dict(other.state_dict())
    plain, folded = plain_and_folded()
    torch.testing.assert_close(folded, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(folded, other.eval()(x).detach(), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        m.bn.running_var.mul_(4)
    plain, folded = plain_and_folded()
    torch.testing.assert_close(folded, plain, atol=1e-5, rtol=1e-5)


def test_conv_bn_trains_as_conv_then_batchnorm():
    m = conv_bn(4, 4, 1).train()
    x = torch.randn(3, 4, 5, 5)
    with torch.no_grad():
        y = m(x)
    # training mode normalises with the batch statistics (no fold): per-channel mean ~0
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert m._folded.key is None


@pytest.mark.parametrize('channels_last', [True, False])
def test_pointwise_conv_bn_runs_as_a_gemm_on_channels_last_maps(channels_last):
    """A 1x1 conv-BN-act in eval: one GEMM over the pixels of a channels-last map (output channels-last too), the
    conv on NCHW; both give the plain forward's values."""
    torch.manual_seed(0)
    m = conv_bn(12, 20, 1, act_layer=nn.ReLU).eval()
    _randomize_bn(m)
    x = torch.randn(2, 12, 5, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    plain = m(x).detach()
    with torch.inference_mode():
        out = m(x)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize('act', ['gelu', 'gelu_tanh'])
def test_mlp_inference_applies_gelu_in_place_with_the_same_values(act):
    from zoo.layers import Mlp
    from zoo.layers.activations import get_act_layer
    torch.manual_seed(0)
    m = Mlp(8, 32, act_layer=get_act_layer(act)).eval()
    x = torch.randn(2, 5, 8)
    plain = m(x).detach()
    x_before = x.clone()
    with torch.inference_mode():
        # float32 rounding apart: the GEMMs may run on oneDNN, and the tanh form on zoo's kernel
        torch.testing.assert_close(m(x), plain, atol=1e-6, rtol=1e-5)
    assert torch.equal(x, x_before)


def test_stem_and_stages_run_on_batch_slices_at_inference(monkeypatch):
    import timm
    from zoo.models import _base
    calls = []
    model = timm.create_model('zoo_poolformer_s12', num_classes=0).eval()
    model.stages[0].blocks.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    monkeypatch.setattr(_base, 'INFERENCE_SLICE_BYTES', 1)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        sliced = model(x)
    assert calls == [1, 1, 1]
    calls.clear()
    torch.testing.assert_close(sliced, model(x).detach(), atol=1e-5, rtol=1e-5)
    assert calls == [3], 'with grad enabled the stage runs on the whole batch'


def test_residual_depthwise_conv_bn_and_cpe_fold_the_identity_in_eval():
    from zoo.layers.cpe import ConvPosEnc
    torch.manual_seed(0)
    m = conv_bn(8, 8, 3, groups=8, residual=True).eval()
    _randomize_bn(m)
    x = torch.randn(2, 8, 9, 7)
    expected = x + nn.Sequential(m.conv, m.bn)(x).detach()  # the plain conv-BN, plus the residual
    torch.testing.assert_close(m(x).detach(), expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)
    assert m._folded.key is not None
    with pytest.raises(ValueError, match='depthwise'):
        conv_bn(8, 16, 3, residual=True)
    cpe = ConvPosEnc(8).eval()
    x = torch.randn(2, 9, 7, 8)  # NHWC
    expected = x + cpe.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach()
    with torch.no_grad():
        y = cpe(x)
        torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
        assert y.is_contiguous()
        cpe.proj.weight.mul_(2)  # the folded kernel follows in-place changes
        torch.testing.assert_close(cpe(x), x + cpe.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


def test_weight_derived_caches_work_for_modules_built_under_inference_mode():
    """Parameters created in inference mode have no version counter: the fold is rebuilt per call instead."""
    torch.manual_seed(0)
    with torch.inference_mode():
        m = conv_bn(8, 16, 3, act_layer=nn.ReLU).eval()
        x = torch.randn(2, 8, 9, 7)
        expected = torch.relu(m.bn(m.conv(x)))
        torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)
        m.conv.weight.mul_(2)  # unseen by a version counter
        torch.testing.assert_close(m(x), torch.relu(m.bn(m.conv(x))), atol=1e-5, rtol=1e-5)


def test_focal_modulation_pads_its_input_projection_at_inference():
    from zoo.layers.focal_modulation import FocalModulation
    torch.manual_seed(0)
    m = FocalModulation(16, focal_level=2).eval()  # f: 16 -> 35 outputs, padded to 40 at inference
    x = torch.randn(2, 5, 7, 16)
    plain = m(x).detach()
    with torch.no_grad():
        torch.testing.assert_close(m(x), plain, atol=1e-6, rtol=1e-6)
        assert m._f_padded.value[0].shape == (40, 16)
        m.f.weight.mul_(2)  # the padded copy follows in-place changes
        torch.testing.assert_close(m(x), m.train()(x), atol=1e-6, rtol=1e-6)


TINY_LINEAR_MODELS = {
    'zoo_swin_tiny': dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=4),
    'zoo_focalnet_tiny_srf': dict(embed_dim=8, depths=(1, 1)),
    'zoo_davit_tiny': dict(embed_dim=(16, 32), depths=(1, 1), num_heads=(1, 2)),
    'zoo_nat_tiny': dict(embed_dim=8, mlp_ratio=2, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), kernel_size=3),
    'zoo_convit_tiny': dict(depth=3, local_up_to_layer=2, embed_dim=48, num_heads=4, img_size=32),  # GPSA + MHSA
}


@pytest.mark.parametrize('name', sorted(TINY_LINEAR_MODELS))
def test_inference_linears_take_the_measured_gemm(monkeypatch, name):
    """At eager inference the linears of the MLPs and mixers (attention qkv / proj, FocalNet's projections), on maps
    or tokens, run on oneDNN's GEMM or MKL's, whichever this machine measured faster
    (zoo.layers.mlp._onednn_infers_faster): forced either way the logits agree, oneDNN's op runs only when chosen
    and never under autocast, and a forward with grad never asks for the measurement."""
    import timm
    from zoo.layers import mlp
    torch.manual_seed(0)
    model = timm.create_model(name, **TINY_LINEAR_MODELS[name]).eval()
    x = torch.randn(2, 3, 32, 32)
    calls = []
    onednn = mlp._onednn_linear
    monkeypatch.setattr(mlp, '_onednn_linear', lambda *args: calls.append(args[1].shape) or onednn(*args))
    logits = {}
    for faster in (False, True):
        monkeypatch.setattr(mlp, '_onednn_infers_faster', lambda threads, faster=faster: faster)
        calls.clear()
        with torch.no_grad():
            logits[faster] = model(x)
        assert bool(calls) == faster
    torch.testing.assert_close(logits[True], logits[False], atol=1e-5, rtol=1e-5)
    blocks = len([m for m in model.modules() if isinstance(m, mlp.Mlp)])
    assert len(calls) >= 4 * blocks  # qkv, proj, fc1, fc2 (FocalNet: f, h, proj, fc1, fc2; GPSA: qk, v, proj, ...)

    calls.clear()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):  # autocast's casts apply as to F.linear
        assert model(x).dtype == torch.bfloat16 and not calls

    def never(threads):
        raise AssertionError('a forward with grad asked for the inference measurement')
    monkeypatch.setattr(mlp, '_onednn_infers_faster', never)
    model(x).sum().backward()


def test_inference_linear_measurement_times_both_gemms():
    from zoo.layers import mlp
    times = mlp._measure_inference_linear()
    assert set(times) == {'mkl', 'onednn'} and all(0 < t < 10 for t in times.values())


def test_hooked_or_subclassed_linears_run_as_modules(monkeypatch):
    """map_linear replaces a linear's call (oneDNN's GEMM at inference, a 1x1 conv in training) only for a plain
    nn.Linear: a forward hook still sees fc2's output, and a subclass's own forward still runs."""
    from zoo.layers import mlp
    monkeypatch.setattr(mlp, '_onednn_infers_faster', lambda threads: True)
    torch.manual_seed(0)
    m = mlp.Mlp(8, 16).eval()
    x = torch.randn(2, 3, 4, 8)
    seen = []
    handle = m.fc2.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    with torch.no_grad():
        m(x)
    assert seen == [(2, 3, 4, 8)]
    handle.remove()

    class Doubled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)
    doubled = Doubled(8, 4)
    with torch.no_grad():
        expected = 2 * nn.functional.linear(x, doubled.weight, doubled.bias)
        torch.testing.assert_close(mlp.map_linear(doubled, x), expected)
