"""MaxViT, DaViT, ConViT: exact against timm for every variant, the authors' checkpoint layouts load strictly,
and their mixers (grid / channel / gated positional attention) hold every backend to the reference."""
import re

import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.layers.attention import (
    GPSA, ChannelAttention, GridAttention, WindowAttention, channel_attention, force_backend, gpsa,
    grid_partition, grid_reverse, window_mask,
)
from zoo.models._builder import check_fit, family_filter
from zoo.models._convert import unwrap

# zoo name -> (timm model of the same config, native resolution)
TIMM_TWINS = {
    **{f'zoo_maxvit_{s}' + ('' if r == 224 else f'_{r}'): (f'maxvit_{s}_tf_{r}', r)
       for s in ('tiny', 'small', 'base', 'large', 'xlarge') for r in (224, 384, 512)},
    **{f'zoo_davit_{s}': (f'davit_{s}', 224) for s in ('tiny', 'small', 'base', 'large', 'huge', 'giant')},
    **{f'zoo_convit_{s}{p}': (f'convit_{s}', 224) for p in ('', '_plus') for s in ('tiny', 'small', 'base')},
}
# timm has no ConViT+ entry: its convit_* at the "+" width is the twin (timm's embed_dim is per head: 48 -> 64)
TIMM_KWARGS = {f'zoo_convit_{s}_plus': dict(embed_dim=64) for s in ('tiny', 'small', 'base')}
# the large DaViTs (197M-1.4B params) are compared at one dual block per stage, for both models: every stage's
# widths, heads and blocks are the full config's
SHRUNK = {f'zoo_davit_{s}': dict(depths=(1, 1, 1, 1)) for s in ('large', 'huge', 'giant')}
# > 30 GMACs at native size, or > 100M params (DaViT-H / G shrunk, ConViT-B+): over 20 s on 2 cores
HEAVY = {'zoo_maxvit_small_512', 'zoo_maxvit_base_384', 'zoo_maxvit_base_512', 'zoo_convit_base_plus',
         'zoo_davit_huge', 'zoo_davit_giant'}
# hundreds of M params and 100-535 GMACs at native size: compared on one block per stage of the same config
# (built in both with depths=(1, 1, 1, 1)), at full width and native resolution; still 23-90 s each on 2 cores,
# so slow (L / XL differ from B only in widths, which tests/test_paper_numbers.py holds to the paper's params)
SHRUNK.update({name: dict(depths=(1, 1, 1, 1)) for name in (
    'zoo_maxvit_large_384', 'zoo_maxvit_large_512', 'zoo_maxvit_xlarge', 'zoo_maxvit_xlarge_384',
    'zoo_maxvit_xlarge_512')})
HEAVY |= {'zoo_maxvit_large', 'zoo_maxvit_large_384', 'zoo_maxvit_large_512', 'zoo_maxvit_xlarge',
          'zoo_maxvit_xlarge_384', 'zoo_maxvit_xlarge_512'}
# 12-13 s each on 2 cores; zoo_maxvit_tiny_384 and small cover their paths (keeps `make test` under 30 minutes)
HEAVY |= {'zoo_maxvit_small_384', 'zoo_maxvit_base'}


def davit_official_layout(sd):
    """timm davit_* -> dingmyu/davit names (patch_embeds / main_blocks / cpe.N / norms / head)."""
    rules = [
        (r'^stem\.conv\.', 'patch_embeds.0.proj.'), (r'^stem\.norm\.', 'patch_embeds.0.norm.'),
        (r'^stages\.(\d+)\.downsample\.conv\.', r'patch_embeds.\1.proj.'),
        (r'^stages\.(\d+)\.downsample\.norm\.', r'patch_embeds.\1.norm.'),
        (r'^stages\.(\d+)\.blocks\.', r'main_blocks.\1.'), (r'\.cpe1\.', '.cpe.0.'), (r'\.cpe2\.', '.cpe.1.'),
        (r'^head\.norm\.', 'norms.'), (r'^head\.fc\.', 'head.'),
    ]
    out = {}
    for k, v in sd.items():
        for p, r in rules:
            k = re.sub(p, r, k)
        out[k] = v
    return {'state_dict': out}


def authors_layout(name, sd):
    """The authors' release layout of a timm state dict: MaxViT's TF release as timm converts it (= timm's
    layout), dingmyu/davit, facebookresearch/convit (timm's names with a plain `head`, a bare state dict)."""
    if 'davit' in name:
        return davit_official_layout(sd)
    return dict(sd)  # convit: official names equal timm's; maxvit: the converted TF release is timm's layout


def _twin_params():
    for name in TIMM_TWINS:
        marks = [pytest.mark.slow] if name in HEAVY else []
        yield pytest.param(name, marks=marks, id=name + ('-depth1' if name in SHRUNK else ''))


@pytest.mark.parametrize('name', _twin_params())
@torch.no_grad()
def test_matches_timm_in_timm_and_authors_layouts(name, tmp_path):
    """The same function as timm's model: equal to 1e-9 in float64. In float32 the logits may differ from timm's
    float64 ones by 1e-4, or by 4x timm's own float32 error where that is larger: deep random-init models
    amplify rounding (MaxViT-B's residual stream reaches |x| ~ 3000 before the final LayerNorm: timm's own fused
    and unfused attention differ by 2.7e-4, its float32 logits from its float64 ones by 1.9-2.0e-4), so kernel
    choice alone moves them past a fixed 1e-4. The spread is chaotic, not a precision ranking: three GELU-tanh
    kernels, each within PyTorch's own error of float64, put zoo's MaxViT-B at 1.5-5.3e-4 depending on the form
    and the thread count (up to 2.9x timm's). The kernels' own precision is held by tests/test_native.py."""
    timm_name, size = TIMM_TWINS[name]
    shrunk = SHRUNK.get(name, {})
    torch.manual_seed(0)
    ref = timm.create_model(timm_name, **TIMM_KWARGS.get(name, {}), **shrunk).eval()
    sd = ref.state_dict()
    x = torch.randn(1, 3, size, size)
    expected32 = ref(x).double()
    expected = ref.double()(x.double())
    bar = max(1e-4, 4 * (expected32 - expected).abs().max().item())
    del ref
    # timm's layout through the family's checkpoint filter, strict
    model = timm.create_model(name, **shrunk).eval()
    model.load_state_dict(check_fit(family_filter(model)(unwrap(sd), model), model), strict=True)
    assert (model(x).double() - expected).abs().max().item() <= bar
    assert (model.double()(x.double()) - expected).abs().max().item() <= 1e-9
    del model
    # the authors' layout, as a file, through timm's pretrained loading (strict)
    path = tmp_path / f'{name}.pth'
    torch.save(authors_layout(name, sd), path)
    del sd
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **shrunk).eval()
    assert (model(x).double() - expected).abs().max().item() <= bar


# --- MaxViT ------------------------------------------------------------------------------------------------
def test_grid_partition_round_trip_and_layout():
    x = torch.arange(2 * 6 * 4 * 1.).view(2, 6, 4, 1)
    windows = grid_partition(x, (3, 2))  # 2 x 2 windows of a dilated 3 x 2 grid
    assert windows.shape == (2, 4, 6, 1)
    # window 0 holds rows 0, 2, 4 and columns 0, 2
    assert windows[0, 0, :, 0].tolist() == [x[0, r, c, 0].item() for r in (0, 2, 4) for c in (0, 2)]
    torch.testing.assert_close(grid_reverse(windows, (3, 2), 6, 4), x)


def test_grid_mask_hides_padded_keys():
    assert window_mask(14, 14, (7, 7), (0, 0), partition='grid') is None
    mask = window_mask(13, 14, (7, 7), (0, 0), partition='grid')  # padded to 14 rows: stride 2, row 13 padded
    assert mask.shape == (4, 49, 49)
    pad = torch.zeros(7, 7, dtype=torch.bool)
    pad[6] = True  # grid row 6 of the windows with an odd row offset is image row 13
    pad = pad.flatten()
    real_queries = mask[2][~pad]
    assert (real_queries[:, pad] == float('-inf')).all() and (real_queries[:, ~pad] == 0).all()
    assert (mask[0] == 0).all()


@torch.no_grad()
def test_grid_attention_on_a_map_smaller_than_the_grid_is_window_attention():
    torch.manual_seed(0)
    grid = GridAttention(32, 4, grid_size=(7, 7)).eval()
    window = WindowAttention(32, 4, window_size=(7, 7)).eval()
    window.load_state_dict(grid.state_dict())
    x = torch.randn(2, 5, 6, 32)
    torch.testing.assert_close(grid(x), window(x))


@pytest.mark.parametrize('size', [(14, 14), (11, 17)])
def test_grid_attention_backends_match_reference(size):
    torch.manual_seed(0)
    attn = GridAttention(32, num_heads=4, grid_size=(7, 7))
    x = torch.randn(2, *size, 32, requires_grad=True)
    outs, grads = [], []
    for backend in ('reference', 'sdpa', 'bmm'):
        with force_backend(backend, op='dense'):
            y = attn(x)
        outs.append(y)
        grads.append(torch.autograd.grad(y.square().sum(), x)[0])
    for y, g in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(y, outs[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g, grads[0], atol=1e-5, rtol=1e-5)


def test_tf_bias_table_conversion_matches_timm():
    from timm.layers.pos_embed_rel import RelPosBiasTf
    from zoo.layers.attention import RelativePositionBias
    from zoo.models.maxvit import _table_from_tf
    torch.manual_seed(0)
    tf = RelPosBiasTf((5, 3), num_heads=2)
    ours = RelativePositionBias((5, 3), num_heads=2)
    ours.relative_position_bias_table.data = _table_from_tf(tf.relative_position_bias_table.data)
    torch.testing.assert_close(ours(), tf.get_bias().reshape(2, 15, 15))  # timm: (heads, N, N)


SMALL_MAXVIT = dict(embed_dim=(32, 32, 64, 64), depths=(1, 1, 1, 1), stem_width=16)  # a tiny twin config


@torch.no_grad()
def test_maxvit_new_resolution_resamples_tables(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model('maxvit_tiny_tf_224', embed_dim=(32, 32, 64, 64), depths=(1, 1, 1, 1), stem_width=16,
                            head_hidden_size=64)
    path = tmp_path / 'maxvit.pth'
    torch.save(ref.state_dict(), path)
    model = timm.create_model('zoo_maxvit_tiny', img_size=256, pretrained=True, **SMALL_MAXVIT,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    blk = model.stages[0].blocks[0]
    assert blk.attn_grid.mixer.window_size == (8, 8)
    assert blk.attn_block.mixer.rel_pos.relative_position_bias_table.shape == (15 * 15, 1)
    other = timm.create_model('zoo_maxvit_tiny', pretrained=True, **SMALL_MAXVIT,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(other(x), ref.eval()(x), atol=1e-4, rtol=1e-4)
    other.set_input_size(img_size=256)
    x = torch.randn(1, 3, 256, 256)
    torch.testing.assert_close(other(x), model(x))


@torch.no_grad()
def test_maxvit_in21k_tag_loads_the_21843_class_head(tmp_path):
    """The ImageNet-21K tags (L / XL at 224) build timm's 21843-class head and load its checkpoint strictly."""
    torch.manual_seed(0)
    ref = timm.create_model('maxvit_xlarge_tf_224', embed_dim=(32, 32, 64, 64), depths=(1, 1, 1, 1), stem_width=16,
                            head_hidden_size=64, num_classes=21843).eval()
    path = tmp_path / 'maxvit_in21k.pth'
    torch.save(ref.state_dict(), path)
    model = timm.create_model('zoo_maxvit_xlarge.in21k', pretrained=True, **SMALL_MAXVIT,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert model.num_classes == 21843 and model.pretrained_cfg['mean'] == (0.5, 0.5, 0.5)
    x = torch.randn(1, 3, 224, 224)  # timm's MaxViT takes window multiples only
    torch.testing.assert_close(model(x), ref(x), atol=1e-4, rtol=1e-4)


# --- DaViT -------------------------------------------------------------------------------------------------
def test_channel_attention_matches_davit_definition():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    expected = (((k * 8 ** -0.5).transpose(-1, -2) @ v).softmax(-1) @ q.transpose(-1, -2)).transpose(-1, -2)
    y = channel_attention(*(t.float() for t in (q, k, v)))
    torch.testing.assert_close(y.double(), expected, atol=1e-6, rtol=1e-6)
    grads = torch.autograd.grad(y.square().sum(), (q, k, v))
    for got, want in zip(grads, torch.autograd.grad(expected.square().sum(), (q, k, v))):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    m = ChannelAttention(24, num_heads=3)
    assert m(torch.randn(2, 5, 7, 24)).shape == (2, 5, 7, 24)


# --- ConViT ------------------------------------------------------------------------------------------------
def test_gpsa_backends_match_reference():
    torch.manual_seed(0)
    attn = GPSA(36, num_heads=9)
    x = torch.randn(2, 5, 7, 36, requires_grad=True)  # non-square grid
    outs, grads = [], []
    for backend in ('reference', 'dense'):
        with force_backend(backend, op='gpsa'):
            y = attn(x)
        outs.append(y)
        grads.append(torch.autograd.grad(y.square().sum(), [x] + list(attn.parameters())))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert gpsa.select(*[torch.zeros(1, 1, 4, 2)] * 3, torch.zeros(1, 4, 4), torch.zeros(1)) == 'dense'


@torch.no_grad()
def test_gpsa_positional_weights_are_never_subnormal():
    """The locality init puts e^-87 .. e^-103 on far keys of a 14 x 14 grid (ConViT-T at 224): the dense backend
    sets those negligible weights to 0 instead of computing with subnormal floats (10-100x slower on x86); the
    weights it keeps and its output match the reference."""
    from zoo.layers.attention.gpsa import _positional_weights, gpsa_offsets
    torch.manual_seed(0)
    attn = GPSA(48, num_heads=4).eval()
    attn.local_init()
    logits = attn.pos_proj(gpsa_offsets(14, 14)).permute(2, 0, 1)
    g = torch.rand(4, 1, 1)
    true_weights = logits.softmax(dim=-1) * g
    tiny = torch.finfo(torch.float32).tiny
    assert ((true_weights > 0) & (true_weights < tiny)).any()  # the case this guards against
    weights = _positional_weights(logits, g)
    assert not ((weights > 0) & (weights < tiny)).any()
    torch.testing.assert_close(weights, true_weights, atol=1e-29, rtol=1e-5)
    x = torch.randn(2, 14, 14, 48)
    with force_backend('reference', op='gpsa'):
        ref = attn(x)
    torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_gpsa_local_init_is_a_soft_3x3_convolution():
    from zoo.layers.attention.gpsa import gpsa_offsets
    attn = GPSA(18, num_heads=9)
    attn.local_init()
    logits = attn.pos_proj(gpsa_offsets(6, 7))  # N, N, heads
    peaks = logits[3 * 7 + 3].argmax(dim=0)  # most attended key of query (3, 3), per head
    assert {divmod(int(k), 7) for k in peaks} == {(3 + dy, 3 + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}


@torch.no_grad()
def test_convit_features_are_stride16_maps_any_size():
    torch.manual_seed(0)
    model = timm.create_model('zoo_convit_tiny', features_only=True).eval()
    assert model.feature_info.reduction() == [16] * 4 and model.feature_info.channels() == [192] * 4
    feats = model(torch.randn(1, 3, 200, 264))
    assert [tuple(f.shape) for f in feats] == [(1, 192, 13, 17)] * 4
    full = timm.create_model('zoo_convit_tiny').eval()
    x = torch.randn(1, 3, 96, 80)
    tokens = full.forward_intermediates(x, indices=[11], output_fmt='NLC', intermediates_only=True)[0]
    maps = full.forward_intermediates(x, indices=[11], intermediates_only=True)[0]
    assert tokens.shape == (1, 1 + 6 * 5, 192)  # the class token is first in the token sequence
    torch.testing.assert_close(maps, tokens[:, 1:].reshape(1, 6, 5, 192).permute(0, 3, 1, 2))


@torch.no_grad()
def test_convit_new_resolution_resamples_pos_embed(tmp_path):
    torch.manual_seed(0)
    small = dict(depth=3, local_up_to_layer=2)
    ref = timm.create_model('convit_tiny', **small).eval()
    path = tmp_path / 'convit.pth'
    torch.save({'model': ref.state_dict()}, path)
    model = timm.create_model('zoo_convit_tiny', img_size=160, pretrained=True, **small,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert model.pos_embed.shape == (1, 100, 192)
    native = timm.create_model('zoo_convit_tiny', pretrained=True, **small,
                               pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(native(x), ref(x), atol=1e-4, rtol=1e-4)
    x = torch.randn(1, 3, 160, 160)
    torch.testing.assert_close(native(x), model(x))  # resampled per call == resampled on load
    native.set_input_size(img_size=160)
    torch.testing.assert_close(native(x), model(x))


@torch.no_grad()
def test_convit_is_the_deit_host_and_loads_the_earlier_zoo_layout(tmp_path):
    """ConViT is the DeiT host configured (GPSA blocks, class token after them); its keys are the release's and
    timm's (but stem / head.fc), and state dicts saved in the zoo's earlier layout (blocks.N.mixer.) load strict."""
    from zoo.models.deit import DeiT
    torch.manual_seed(0)
    small = dict(depth=3, local_up_to_layer=2)
    model = timm.create_model('zoo_convit_tiny', **small).eval()
    assert isinstance(model, DeiT) and model.cls_token_at == 2 and model.pos_embed.shape == (1, 196, 192)
    earlier = {re.sub(r'^(blocks\.\d+)\.attn\.', r'\1.mixer.', k): v for k, v in model.state_dict().items()}
    assert any('.mixer.' in k for k in earlier)
    path = tmp_path / 'earlier.pth'
    torch.save(earlier, path)
    loaded = timm.create_model('zoo_convit_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                               **small).eval()
    x = torch.randn(1, 3, 64, 48)
    torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    gpsa_out, mhsa_out = model.forward_intermediates(x, indices=[1, 2], output_fmt='NLC', intermediates_only=True)
    assert gpsa_out.shape == (1, 4 * 3, 192) and mhsa_out.shape == (1, 1 + 4 * 3, 192)  # class token joins at 2


def test_maxvit_trains_in_channels_last_memory_with_the_nchw_values():
    """Training with autograd runs MaxViT's convs on channels-last maps (faster depthwise backward); the loss and
    every gradient equal the NCHW run's to float32 rounding, and inference stays NCHW (timm parity)."""
    torch.manual_seed(0)
    model = timm.create_model('zoo_maxvit_tiny', embed_dim=(32, 64, 64, 64), depths=(1, 1, 1, 1), stem_width=16,
                              num_classes=10).train()
    x = torch.randn(2, 3, 64, 64)
    seen = []
    hook = model.stages[0].blocks[0].conv.conv2_kxk.register_forward_hook(
        lambda m, i, o: seen.append(i[0].is_contiguous(memory_format=torch.channels_last)))
    runs = {}
    for cl in (True, False):
        model.channels_last_training = cl
        model.zero_grad()
        torch.manual_seed(1)  # same drop-path draws (none here) and dropout
        loss = model(x).square().mean()
        loss.backward()
        runs[cl] = loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}
    assert seen == [True, False]
    assert abs(runs[True][0] - runs[False][0]) <= 1e-6 * abs(runs[False][0])
    for n, g in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][n], g, atol=1e-6, rtol=1e-4, msg=n)
    model.channels_last_training = True
    with torch.no_grad():
        model.eval()(x)
    assert seen[-1] is False
    hook.remove()
