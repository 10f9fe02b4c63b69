"""FocalNet, PoolFormer and SHViT: exact against timm's models and loading the authors' released layouts.

For every variant: timm's model of the same config with random weights (norms, BatchNorm statistics and layer
scales randomised too, so no branch is silently ~0), its weights copied through the zoo checkpoint filter,
one forward at the native resolution (fp32, eval) -> max abs diff <= 1e-4. The same weights written under the
authors' key names (microsoft/FocalNet, sail-sg/poolformer, ysj9909/SHViT, in their `{'model': ...}` wrapper)
load strictly through `timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=...))`.
The authors-layout writers below are written from the authors' module trees, independently of the filters.
"""
import re

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

import zoo  # noqa: F401
from zoo.layers import force_backend
from zoo.layers.attention.single_head import single_head_attention
from zoo.layers.downsample import ConvDownsample
from zoo.models._convert import CheckpointMismatchError
from zoo.models.focalnet import checkpoint_filter_fn as focalnet_filter
from zoo.models.poolformer import checkpoint_filter_fn as poolformer_filter
from zoo.models.shvit import checkpoint_filter_fn as shvit_filter

ATOL = 1e-4


# --- the authors' key layouts, written from timm's -------------------------------------------------------
def focalnet_official(sd):
    """microsoft/FocalNet: patch_embed, layers.i (downsample at the END of stage i), linear layers except the
    1x1-conv modulator `h`, no layer scale for T/S/B, head."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r'^stem\.', 'patch_embed.', k)
        k = re.sub(r'^layers\.(\d+)\.downsample', lambda m: f'layers.{int(m.group(1)) - 1}.downsample', k)
        k = re.sub(r'^head\.fc\.', 'head.', k)
        k = re.sub(r'\.norm(\d)_post\.', r'.norm\1.', k)  # L/XL/H: post-norms named norm1 / norm2 there
        k = k.replace('.modulation.norm.', '.modulation.ln.')  # H: the norm inside the modulation
        if re.search(r'(modulation\.(f|proj)|mlp\.fc\d)\.weight$', k):
            v = v.flatten(1)
        out[k] = v
    return out


def poolformer_official(sd):
    """sail-sg/poolformer: patch_embed.proj, network.{0,2,4,6}.{j} blocks, network.{1,3,5}.proj downsamples,
    layer_scale_1/2, norm (GroupNorm(1) on the map), head."""
    out = {}
    for k, v in sd.items():
        k = k.replace('stem.conv.', 'patch_embed.proj.')
        k = re.sub(r'^stages\.(\d+)\.downsample\.conv\.', lambda m: f'network.{2 * int(m.group(1)) - 1}.proj.', k)
        k = re.sub(r'^stages\.(\d+)\.blocks\.(\d+)\.', lambda m: f'network.{2 * int(m.group(1))}.{m.group(2)}.', k)
        k = re.sub(r'layer_scale(\d)\.scale$', r'layer_scale_\1', k)
        k = re.sub(r'^head\.norm\.', 'norm.', k)
        k = re.sub(r'^head\.fc\.', 'head.', k)
        out[k] = v
    return out


def shvit_official(sd):
    """ysj9909/SHViT: patch_embed.{0,2,4,6}, blocks1..3; in blocks2/3 entries 0 (dw + FFN), 1 (PatchMerging),
    2 (dw + FFN) downsample and the blocks follow from 3; head.bn / head.l."""
    ds = {'0': '0.0', '1': '0.1', '2': '1', '3': '2.0', '4': '2.1'}
    out = {}
    for k, v in sd.items():
        k = re.sub(r'^stages\.(\d)\.downsample\.(\d)\.', lambda m: f'blocks{int(m.group(1)) + 1}.{ds[m.group(2)]}.', k)
        k = re.sub(r'^stages\.(\d)\.blocks\.(\d+)\.',
                   lambda m: f'blocks{int(m.group(1)) + 1}.{int(m.group(2)) + (3 if m.group(1) != "0" else 0)}.', k)
        out[k] = v
    return out


def shvit_fused(model):
    """The authors' deploy state dict (their `replace_batchnorm`): conv-BN -> conv with bias, residual dw
    conv-BN -> one conv holding the identity, BN_Linear -> linear; from an (unfused) official-layout model."""
    sd = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d) and name.endswith('.bn') and name != 'head.bn':
            prefix = name[:-3]
            conv = model.get_submodule(prefix + '.c')
            s = m.weight / (m.running_var + m.eps).sqrt()
            w = conv.weight * s[:, None, None, None]
            b = m.bias - m.running_mean * s
            if prefix.endswith('.m') and conv.groups == conv.in_channels:  # Residual(dw conv-BN)
                w = w.clone()
                w[:, 0, 1, 1] += 1.
                prefix = prefix[:-2]
            sd[prefix + '.weight'], sd[prefix + '.bias'] = w, b
        elif isinstance(m, (nn.GroupNorm,)) or name.endswith('.se.fc1') or name.endswith('.se.fc2'):
            sd[name + '.weight'], sd[name + '.bias'] = m.weight, m.bias
    bn, lin = model.head.bn, model.head.l
    s = bn.weight / (bn.running_var + bn.eps).sqrt()
    sd['head.weight'] = lin.weight * s[None]
    sd['head.bias'] = lin.bias + lin.weight @ (bn.bias - bn.running_mean * s)
    return {k: v.detach().clone() for k, v in sd.items()}


FAMILIES = {  # zoo name -> (timm name, zoo filter, authors' layout writer, native size)
    **{f'zoo_focalnet_{v}': (f'focalnet_{v}', focalnet_filter, focalnet_official, 224)
       for v in ('tiny_srf', 'tiny_lrf', 'small_srf', 'small_lrf', 'base_srf', 'base_lrf',
                 'large_fl3', 'large_fl4', 'xlarge_fl3', 'xlarge_fl4', 'huge_fl3', 'huge_fl4')},
    **{f'zoo_poolformer_{v}': (f'poolformer_{v}', poolformer_filter, poolformer_official, 224)
       for v in ('s12', 's24', 's36', 'm36', 'm48')},
    **{f'zoo_shvit_{v}': (f'shvit_{v}', shvit_filter, shvit_official, 256 if v == 's4' else 224)
       for v in ('s1', 's2', 's3', 's4')},
}


@torch.no_grad()
def randomize_(model):
    """Random values for what inits leave trivial: norm affines, BN statistics, layer scales (1e-5 / 1e-6)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * .1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + .5)
    for n, p in model.named_parameters():
        if p.ndim == 1:
            p.copy_(torch.randn(p.shape, generator=g) * .2 + (1. if re.search(r'(norm|bn|ln)\d?\.weight$', n) else 0.))
    return model


def image(size, seed=0):
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


# FocalNet-L / XL / H (200-700 M params): one block per stage of the same config, built in both (timm's
# entrypoints fix the depths: its FocalNet class with their arguments); the release's large_fl4 config normalises
# the modulator, timm's focalnet_large_fl4 leaves it out: set here for the twin
_TIMM_WIDE = dict(depths=(1, 1, 1, 1), use_post_norm=True, use_overlap_down=True, layerscale_value=1e-4)
TIMM_REDUCED = {
    'zoo_focalnet_large_fl3': dict(embed_dim=192, focal_levels=[3] * 4, focal_windows=[5] * 4),
    'zoo_focalnet_large_fl4': dict(embed_dim=192, focal_levels=[4] * 4, normalize_modulator=True),
    'zoo_focalnet_xlarge_fl3': dict(embed_dim=256, focal_levels=[3] * 4, focal_windows=[5] * 4),
    'zoo_focalnet_xlarge_fl4': dict(embed_dim=256, focal_levels=[4] * 4),
    'zoo_focalnet_huge_fl3': dict(embed_dim=352, focal_levels=[3] * 4, use_post_norm_in_modulation=True),
    'zoo_focalnet_huge_fl4': dict(embed_dim=352, focal_levels=[4] * 4, use_post_norm_in_modulation=True),
}


def timm_twin(name, timm_name):
    if name in TIMM_REDUCED:
        from timm.models.focalnet import FocalNet as TimmFocalNet
        return TimmFocalNet(**_TIMM_WIDE, **TIMM_REDUCED[name], num_classes=1000)
    return timm.create_model(timm_name, num_classes=1000)


@pytest.mark.parametrize('name', [pytest.param(n, id=n + ('-depth1' if n in TIMM_REDUCED else ''),
                                             marks=[pytest.mark.slow] if 'huge' in n else [])  # 22-27 s
                                for n in FAMILIES])
@torch.no_grad()
def test_exact_against_timm_and_authors_layout(name, tmp_path):
    timm_name, filter_fn, official, size = FAMILIES[name]
    # the 22K tags' default is 21842 classes
    config = dict(depths=_TIMM_WIDE['depths'], num_classes=1000) if name in TIMM_REDUCED else {}
    torch.manual_seed(0)
    ref = randomize_(timm_twin(name, timm_name).eval())
    x = image(size)
    feat = ref.forward_features(x)
    expected = ref.forward_head(feat)
    assert expected.std() > 1e-2  # the random weights give a non-trivial function

    # timm's layout, through the zoo filter (PoolFormer: timm's pooled-LayerNorm head, see poolformer.py)
    kwargs = dict(head_norm='pooled') if 'poolformer' in name else {}
    model = timm.create_model(name, **kwargs, **config).eval()
    model.load_state_dict(filter_fn(ref.state_dict(), model), strict=True)
    torch.testing.assert_close(model(x), expected, atol=ATOL, rtol=0)

    # the authors' layout, through timm's pretrained path with strict loading
    path = tmp_path / 'official.pth'
    torch.save({'model': official(ref.state_dict()), 'epoch': 299}, path)
    # a 1000-class checkpoint under a 22K tag: say so, or timm drops the mismatched head
    overlay = dict(file=str(path), num_classes=1000)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **config).eval()
    final, (last,) = model.forward_intermediates(x, indices=[-1])
    if 'poolformer' in name:  # the authors' head: GroupNorm(1) on the last map, then average, then linear
        torch.testing.assert_close(last, feat, atol=ATOL, rtol=0)
        norm, fc = ref.head.norm, ref.head.fc
        expected = fc(F.group_norm(feat, 1, norm.weight, norm.bias, norm.eps).mean((2, 3)))
    torch.testing.assert_close(model.forward_head(final), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize('layer_scale_post_norm', [False, True])  # tiny / small_iso, base_iso
@torch.no_grad()
def test_isotropic_focalnet_is_the_release_one_stage_focalnet(layer_scale_post_norm, tmp_path):
    """The release builds its isotropic FocalNets as a one-stage FocalNet (depths=[12], patch 16): its layout
    loads strictly and equals the zoo's (timm-checked) hierarchical FocalNet of that config on the same weights;
    features are the blocks' stride-16 maps."""
    extra = dict(layer_scale_init=1e-4, post_norm=True) if layer_scale_post_norm else {}
    torch.manual_seed(0)
    one_stage = randomize_(timm.create_model('zoo_focalnet_tiny_lrf', embed_dim=32, depths=(3,), patch_size=16,
                                             **extra).eval())
    release = focalnet_official({k.replace('stages.', 'layers.').replace('mixer.', 'modulation.'): v for k, v in one_stage.state_dict().items()})
    release = {re.sub(r'ls(\d)\.gamma$', r'gamma_\1', k): v for k, v in release.items()}
    assert 'layers.0.blocks.2.modulation.h.weight' in release
    path = tmp_path / 'iso.pth'
    torch.save({'model': release}, path)
    iso = timm.create_model('zoo_focalnet_base_iso' if extra else 'zoo_focalnet_tiny_iso', embed_dim=32, depth=3,
                            pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = image(80)
    torch.testing.assert_close(iso(x), one_stage(x), atol=1e-5, rtol=0)
    maps = iso.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(1, 32, 5, 5)] * 2


@torch.no_grad()
def test_focalnet_imagenet_weights_load_into_detection_kernels(tmp_path):
    """The authors' detection/segmentation FocalNets use focal kernels 9-11-13 and load the ImageNet 3-5-7
    kernels zero-padded around the centre: the padded model computes exactly the same function."""
    tiny = dict(embed_dim=16, depths=(1, 1, 1, 1))
    torch.manual_seed(0)
    ref = randomize_(timm.create_model('zoo_focalnet_tiny_lrf', **tiny).eval())
    path = tmp_path / 'official.pth'
    torch.save(ref.state_dict(), path)
    det = timm.create_model('zoo_focalnet_tiny_lrf', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                            focal_windows=(9, 9, 9, 9), **tiny).eval()
    assert det.stages[0].blocks[0].mixer.focal_layers[2][0].weight.shape[-1] == 13
    x = image(64)
    torch.testing.assert_close(det(x), ref(x), atol=1e-5, rtol=0)


@torch.no_grad()
def test_shvit_fused_release_and_2d_weights(tmp_path):
    """A deploy (BN-fused) state dict of the authors' model, and 1x1 conv weights stored 2-D (the authors'
    loader reshapes those with [:, :, None, None]), load exactly."""
    torch.manual_seed(0)
    ref = randomize_(timm.create_model('shvit_s1').eval())
    x = image(224)
    expected = ref(x)
    official = shvit_official(ref.state_dict())
    official = {k: v.flatten(1) if '.se.fc' in k and v.ndim == 4 else v for k, v in official.items()}
    path = tmp_path / 'unfused_2d.pth'
    torch.save({'model': official}, path)
    model = timm.create_model('zoo_shvit_s1', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    torch.testing.assert_close(model(x), expected, atol=ATOL, rtol=0)

    # a module tree with the authors' names, to fuse as their replace_batchnorm does
    ref_official = nn.Module()
    for k, v in shvit_official(ref.state_dict()).items():
        *parents, leaf = k.split('.')
        mod = ref_official
        for p in parents:
            if not hasattr(mod, p):
                mod.add_module(p, nn.Module())
            mod = getattr(mod, p)
        mod.register_buffer(leaf, v)
    for name, m in list(ref_official.named_modules()):  # give the leaves their types for shvit_fused
        if hasattr(m, 'running_var'):
            m.__class__ = nn.BatchNorm2d if not name.startswith('head') else nn.BatchNorm1d
            m.eps = 1e-5
        elif name.endswith('.c'):
            m.__class__ = nn.Conv2d
            m.groups, m.in_channels = (m.weight.shape[0],) * 2 if m.weight.shape[1] == 1 else (1, m.weight.shape[1])
        elif name.endswith('pre_norm'):
            m.__class__ = nn.GroupNorm
    fused = shvit_fused(ref_official)
    assert not any(k.endswith('running_var') for k in fused)
    path = tmp_path / 'fused.pth'
    torch.save({'model': fused}, path)
    model = timm.create_model('zoo_shvit_s1', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    torch.testing.assert_close(model(x), expected, atol=ATOL, rtol=0)


def test_other_variant_checkpoint_is_a_clear_error(tmp_path):
    sd = timm.create_model('zoo_poolformer_s12').state_dict()
    path = tmp_path / 's12.pth'
    torch.save({'model': poolformer_official({k.replace('stem.proj', 'stem.conv')
                                                .replace('downsample.proj', 'downsample.conv'): v
                                              for k, v in sd.items()})}, path)
    with pytest.raises(CheckpointMismatchError, match='missing'):
        timm.create_model('zoo_poolformer_s24', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_single_head_attention_backends_agree():
    """SDPA and bmm backends == reference backend, forward and backward, with q/k width != v width."""
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 16, 5, 7, generator=g, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 24, 5, 7, generator=g, requires_grad=True)
    outs = []
    for backend in ('reference', 'sdpa', 'bmm'):
        with force_backend(backend, op='dense'):
            y = single_head_attention(q, k, v, scale=16 ** -0.5)
        grads = torch.autograd.grad(y.square().sum(), (q, k, v))
        outs.append((y, *grads))
    assert outs[0][0].shape == (2, 24, 5, 7)
    for other in outs[1:]:
        for a, b in zip(other, outs[0]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # definition: position p attends to every position with softmax(q_p . k / sqrt(d))
    attn = torch.einsum('bcp,bcn->bpn', q.flatten(2), k.flatten(2)).mul(16 ** -0.5).softmax(-1)
    torch.testing.assert_close(outs[0][0].flatten(2), torch.einsum('bpn,bcn->bcp', attn, v.flatten(2)))


@pytest.mark.parametrize('kernel,stride,padding', [(7, 4, 2), (3, 2, 1), (4, 4, 0), (2, 2, 0)])
@pytest.mark.parametrize('size', [(224, 224), (225, 37), (13, 200)])
def test_conv_downsample_any_size(kernel, stride, padding, size):
    """ceil(H / stride) outputs at any size, and exactly the plain conv where no padding is needed."""
    m = ConvDownsample(3, 4, kernel, stride, padding)
    x = torch.randn(1, 3, *size)
    y = m(x)
    assert y.shape[-2:] == tuple(-(-s // stride) for s in size)
    plain = m.proj(x)
    if plain.shape == y.shape:
        torch.testing.assert_close(y, plain)


def _saved_for_backward(module: nn.Module, x: torch.Tensor):
    """Bytes of the distinct storages autograd saves for backward in module(x), parameters and x itself left out:
    deterministic, what a checkpointed block's recompute holds at once."""
    skip = {p.untyped_storage().data_ptr() for p in module.parameters()} | {x.untyped_storage().data_ptr()}
    saved = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(saved.values())


def test_focalnet_block_saves_no_more_for_backward_than_timms():
    """A training FocalNet block (what grad checkpointing recomputes, block by block) saves no more than timm's
    FocalNetBlock: the first focal conv saves its input as a view of f's output, not a channels-last copy of the
    context (issue 19 §2: that copy was one extra (B, H, W, C) map per block)."""
    from timm.layers import LayerNorm2d
    from timm.models.focalnet import FocalNetBlock
    torch.manual_seed(0)
    dim, b, h, w = 16, 2, 12, 10
    zoo_model = timm.create_model('zoo_focalnet_tiny_srf', embed_dim=dim, depths=(1, 1, 1, 1)).train()
    zoo_block = zoo_model.stages[0].blocks[0]
    timm_block = FocalNetBlock(dim, focal_level=2, focal_window=3, layerscale_value=None,
                               norm_layer=LayerNorm2d).train()
    x = torch.randn(b, h, w, dim, requires_grad=True)
    zoo_bytes = _saved_for_backward(zoo_block, x)
    timm_bytes = _saved_for_backward(timm_block, x.detach().permute(0, 3, 1, 2).requires_grad_())
    assert zoo_bytes <= timm_bytes, (zoo_bytes, timm_bytes)
    # the focal modulation alone: f's output (q, ctx, gates: one storage), two conv and two GELU outputs, the
    # context sum, h's output and the modulated map (7 maps), the global context (2 tiny tensors); no copy of ctx
    mixer_in = torch.randn(b, h, w, dim, requires_grad=True)
    mixer_bytes = _saved_for_backward(zoo_block.mixer, mixer_in)
    full = b * h * w * dim * 4
    assert mixer_bytes == b * h * w * (2 * dim + 3) * 4 + 7 * full + 2 * b * dim * 4


def _training_step(forward, model: nn.Module, x: torch.Tensor):
    """(output, parameter gradients) of one backward of forward(x).square().sum() from zeroed gradients."""
    model.zero_grad()
    out = forward(x)
    out.square().sum().backward()
    return out, [p.grad.clone() for p in model.parameters()]


def _assert_same_step(got, want):
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    for got_grad, want_grad in zip(got[1], want[1]):
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-5)


def test_compiled_focalnet_runs_its_map_linears_as_1x1_convs(captured_graphs):
    """Under torch.compile on CPU, FocalNet's linears on (B, H, W, C) maps (f, h, proj, the MLP) run as 1x1
    convolutions of the map's NCHW view (map_linear: oneDNN's conv beat MKL's sgemm there, compiled FocalNet-T
    0.86x -> 0.97x timm): the captured graph has no linear left but the classifier head's, and its outputs and
    gradients equal eager's."""
    record, graphs = captured_graphs
    torch.manual_seed(0)
    model = timm.create_model('zoo_focalnet_tiny_srf', embed_dim=8, depths=(1, 1), num_classes=5)
    compiled = torch.compile(model, backend=record)
    x = torch.randn(2, 3, 32, 32)
    _assert_same_step(_training_step(compiled, model, x), _training_step(model, model, x))
    ((graph, _),) = graphs
    calls = [node.target for node in graph.graph.nodes if node.op == 'call_function']
    assert sum(t in (F.linear, torch._C._nn.linear) for t in calls) == 1  # the head
    assert sum(t in (F.conv2d, torch.conv2d) for t in calls) == 2 * (3 + 2) + 2 * 2 + 2  # + focal levels, stems


def test_training_map_linears_take_the_measured_choice(monkeypatch):
    """In eager training, map_linear runs FocalNet's linears as 1x1 convolutions where this machine measured them
    faster (zoo.layers.mlp._conv_trains_faster): forced either way, outputs and gradients agree, the choice is
    taken for every map linear (f, h, proj, fc1, fc2 of each block), and inference never asks for it."""
    from zoo.layers import mlp
    torch.manual_seed(0)
    model = timm.create_model('zoo_focalnet_tiny_srf', embed_dim=8, depths=(1, 1), num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    as_conv = mlp._as_conv
    convs = []
    monkeypatch.setattr(mlp, '_as_conv', lambda linear, x: convs.append(linear) or as_conv(linear, x))
    steps = []
    for faster in (False, True):
        monkeypatch.setattr(mlp, '_conv_trains_faster', lambda threads, faster=faster: faster)
        steps.append(_training_step(model, model, x))
    assert len(convs) == 2 * 5 and all(isinstance(m, nn.Linear) for m in convs)
    _assert_same_step(*steps)

    def never(threads):
        raise AssertionError('inference asked for the training measurement')
    monkeypatch.setattr(mlp, '_conv_trains_faster', never)
    with torch.no_grad():
        model.eval()(x)


def test_map_linear_measurement_times_both_forms():
    from zoo.layers import mlp
    times = mlp._measure_map_linear()
    assert set(times) == {'linear', 'conv'} and all(0 < t < 10 for t in times.values())
