"""NAT / DiNAT and neighborhood attention: every backend against the reference (forward and backward), gradcheck,
NATTEN parity (when installed), and the authors' model outputs through the checkpoint filter.

Fixture `tests/fixtures/nat_authors_tiny.pt` was produced once, outside this repository, like this:
  1. fetched SHI-Labs/Neighborhood-Attention-Transformer (commit d334f5b) and ran its unmodified
     `classification/nat.py` (`NAT`, the class DiNAT also uses) with torch 2.14.1 / timm 1.0.31;
  2. `import natten` resolved to a throwaway stand-in for NATTEN 0.14.6 (the version the released code targets):
     `NeighborhoodAttention2D` as NATTEN 0.14.6 defines it (qkv / rpb / proj; maps smaller than
     kernel * dilation zero-padded bottom/right before qkv and cropped after), with `natten2dqkrpb` /
     `natten2dav` written as naive per-query Python loops using NATTEN's own window-start and rpb-start
     formulas (get_window_start / get_pb_start of its CPU kernels) - an implementation independent of zoo's;
  3. built NAT(embed_dim=8, mlp_ratio=2, depths=[2, 2, 2, 1], num_heads=[1, 2, 2, 4], kernel_size=3,
     dilations=[[1, 8], [1, 4], [1, 2], [1]], layer_scale=0.5, drop_path_rate=0, num_classes=10) after
     torch.manual_seed(0), set every parameter to randn * 0.2 (matrices) / randn * 0.5 (vectors; norm weights
     +1), eval mode;
  4. inputs from torch.Generator().manual_seed(1): `input` randn(2, 3, 96, 112) (stage maps 24x28 ... 3x4: every
     map fits kernel * dilation, dilation groups of unequal length) and `input_small` randn(1, 3, 64, 72)
     (4x5 and 2x3 maps: the authors' module pads);
  5. saved {'model': their state_dict (their key names), 'config', 'input', 'output', 'input_small',
     'output_small'} with torch.save (fp32, 0.7 MB).
"""
import os
import warnings

import pytest
import timm
import torch

from zoo.layers.attention import force_backend, na1d, na2d, neighborhood_attention
from zoo.layers.attention.neighborhood import NeighborhoodAttention2D, natten_available

FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'nat_authors_tiny.pt')


def _inputs(B, H, W, heads, d, k, rpb, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, key, v = (torch.randn(B, H, W, heads, d, generator=g, dtype=dtype).requires_grad_() for _ in range(3))
    table = torch.randn(heads, 2 * k - 1, 2 * k - 1, generator=g, dtype=dtype).requires_grad_() if rpb else None
    return q, key, v, table


def _run(backend, q, k, v, kernel, dilation, rpb):
    with force_backend(backend, op='neighborhood'):
        out = na2d(q, k, v, kernel, dilation, rpb=rpb)
    leaves = [t for t in (q, k, v, rpb) if t is not None]
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.shape[-1])).sum(), leaves)
    return out, grads


def _assert_matches_reference(backend, kernel, dilation, H, W, rpb):
    """Output and the q, k, v (and rpb) gradients of `backend` within 1e-5 of the reference (fp32)."""
    q, k, v, table = _inputs(2, H, W, 2, 4, kernel, rpb)
    ref, ref_grads = _run('reference', q, k, v, kernel, dilation, table)
    out, grads = _run(backend, q, k, v, kernel, dilation, table)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=0)


# kernel 3/7/13, dilation 1/2/4, non-square maps (sizes not multiples of the dilation), rpb on/off
CASES = [(3, 1, 9, 14), (3, 2, 11, 8), (3, 4, 13, 17), (7, 1, 10, 15), (7, 2, 16, 19), (7, 4, 29, 30),
         (13, 1, 15, 20), (13, 2, 27, 26), (13, 4, 53, 55)]


@pytest.mark.parametrize('rpb', [False, True])
@pytest.mark.parametrize('kernel,dilation,H,W', CASES)
def test_cpu_backend_matches_reference(kernel, dilation, H, W, rpb):
    _assert_matches_reference('cpu', kernel, dilation, H, W, rpb)


def test_rectangular_kernel_and_1d():
    q, k, v, _ = _inputs(1, 12, 9, 2, 4, 3, False)
    rpb = torch.randn(2, 9, 5, requires_grad=True)
    ref, _ = _run('reference', q, k, v, (5, 3), (2, 3), rpb)
    out, _ = _run('cpu', q, k, v, (5, 3), (2, 3), rpb)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    # 1-D: the 2-D op on an L x 1 map with a k x 1 kernel; check against an explicit loop
    q1, k1, v1 = (torch.randn(2, 11, 2, 4) for _ in range(3))
    rpb1 = torch.randn(2, 5)
    out1 = na1d(q1, k1, v1, 3, 2, rpb=rpb1)
    for i in range(11):
        g, n, L = i % 2, i // 2, len(range(i % 2, 11, 2))
        s = min(max(n - 1, 0), L - 3)
        keys = [g + (s + a) * 2 for a in range(3)]
        logits = torch.einsum('bhd,bkhd->bhk', q1[:, i] * 4 ** -0.5, k1[:, keys])
        logits = logits + rpb1[:, [s + a - n + 2 for a in range(3)]]
        ref_i = torch.einsum('bhk,bkhd->bhd', logits.softmax(-1), v1[:, keys])
        torch.testing.assert_close(out1[:, i], ref_i, atol=1e-5, rtol=0)


def test_gradcheck_cpu_float64():
    q, k, v, rpb = _inputs(1, 7, 9, 2, 3, 3, True, dtype=torch.float64)
    with force_backend('cpu', op='neighborhood'):
        assert torch.autograd.gradcheck(lambda *t: na2d(*t[:3], 3, (2, 1), rpb=t[3]), (q, k, v, rpb))


def test_dispatch_and_errors():
    q = torch.randn(1, 8, 8, 2, 4)
    assert neighborhood_attention.select(q, q, q, (3, 3), (1, 1), None, None) == 'cpu'
    with pytest.raises(ValueError, match='kernel_size \\* dilation'):
        na2d(q, q, q, 3, 3)
    with pytest.raises(ValueError, match='rpb must have shape'):
        na2d(q, q, q, 3, 1, rpb=torch.zeros(2, 3, 3))


def test_module_small_maps():
    torch.manual_seed(0)
    m = NeighborhoodAttention2D(16, 2, kernel_size=7, dilation=4).eval()
    assert m.effective(30, 13) == ((4, 1), (30, 13))  # dilation clipped to fit, 13 >= 7 * 1
    assert m.effective(5, 9) == ((1, 1), (7, 9))  # smaller than the kernel: padded
    x = torch.randn(2, 5, 9, 16)
    assert torch.isfinite(m(x)).all()
    m.small_map = 'pad'
    assert m.effective(5, 9) == ((4, 4), (28, 28))


def test_training_after_an_inference_mode_pass():
    """Index tensors cached in an inference_mode forward are normal tensors: a later training step can save them."""
    m = NeighborhoodAttention2D(16, 2, kernel_size=3, dilation=2)
    x = torch.randn(1, 9, 11, 16)
    with torch.inference_mode():
        ref = m(x)
    with force_backend('cpu', op='neighborhood'):
        out = m(x)
    out.sum().backward()
    assert m.rpb.grad is not None and torch.allclose(out, ref, atol=1e-6)


# flex: the CUDA path with rpb. On CPU, torch runs flex_attention eagerly (materialized scores, the mask_mod applied
# element-wise) but refuses its backward there; its autograd (the dense math backward, rpb grads included) is
# device-agnostic, so the backward tests lift that one device check (fixture flex_backward_on_cpu, conftest.py).
# The BlockMask (block sparsity, only used by the fused CUDA kernel) is checked separately against the reference
# neighbourhoods.
# kernel 3/7 x dilation 1/2 with rpb, two of them without (each eager flex call is traced by dynamo: ~1 s)
FLEX_CASES = [(3, 1, 9, 14, True), (3, 2, 11, 8, True), (7, 1, 10, 15, True), (7, 2, 16, 19, True),
              (3, 2, 11, 8, False), (7, 1, 10, 15, False)]



@pytest.mark.filterwarnings('ignore:flex_attention called without torch.compile')
@pytest.mark.parametrize('kernel,dilation,H,W,rpb', FLEX_CASES)
def test_flex_backend_matches_reference(kernel, dilation, H, W, rpb, flex_backward_on_cpu):
    _assert_matches_reference('flex', kernel, dilation, H, W, rpb)


@pytest.mark.filterwarnings('ignore:flex_attention called without torch.compile')
def test_flex_forward_on_cpu_and_dispatch():
    q, k, v, rpb = (t.detach() for t in _inputs(1, 12, 9, 2, 4, 3, True))
    rpb = torch.randn(2, 9, 5)
    with torch.no_grad():  # plain torch, no device check lifted: eager flex forward runs on CPU
        ref = neighborhood_attention(q, k, v, (5, 3), (2, 3), rpb, 0.3, backend='reference')
        out = neighborhood_attention(q, k, v, (5, 3), (2, 3), rpb, 0.3, backend='flex')
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    # chosen automatically for CUDA tensors only; on CPU the tiled path stays the default
    assert neighborhood_attention.backends['flex'].supports(q, k, v, (3, 3), (1, 1), rpb, None) is False
    assert neighborhood_attention.select(q, k, v, (3, 3), (1, 1), rpb, None) == 'cpu'
    with force_backend('flex', op='neighborhood'):  # forcing needs only `runs` (flex_attention importable)
        assert neighborhood_attention.select(q, k, v, (3, 3), (1, 1), rpb, None) == 'flex'


# Compiled flex forward on CPU (torch >= 2.14): the kernel the CUDA path runs, BlockMask sparsity (full blocks skip the
# mask_mod) and the rpb score_mod included. Each map size x kernel size x rpb on/off is one inductor compile (~10-15 s
# on 2 busy cores): the default set is small (with test_flex_forward_on_cpu_and_dispatch, compiled too), the rest slow.
@pytest.fixture
def fresh_dynamo():
    """On CPU the compiled flex is static-shaped: one compile per map size, and past dynamo's recompile limit (8) it
    falls back to eager flex. Each test starts from a reset dynamo, so a long run of them keeps testing the kernel."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _assert_compiled_flex_matches_reference(kernel, dilation, H, W, rpb):
    q, k, v, table = (None if t is None else t.detach() for t in _inputs(1, H, W, 2, 8, kernel, rpb))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings('error', message='.*without torch.compile')  # the compiled kernel, not eager flex
        ref = neighborhood_attention(q, k, v, (kernel,) * 2, (dilation,) * 2, table, 0.4, backend='reference')
        out = neighborhood_attention(q, k, v, (kernel,) * 2, (dilation,) * 2, table, 0.4, backend='flex')
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize('kernel,dilation,H,W,rpb', [
    (5, 2, 13, 11, True), *(pytest.param(*c, marks=pytest.mark.slow) for c in [(5, 3, 17, 16, True), (3, 3, 13, 11, False)])])
def test_compiled_flex_forward_on_cpu_matches_reference(kernel, dilation, H, W, rpb, fresh_dynamo):
    _assert_compiled_flex_matches_reference(kernel, dilation, H, W, rpb)


@pytest.mark.slow
@pytest.mark.parametrize('rpb', [True, False])
@pytest.mark.parametrize('dilation', [1, 2, 3])
@pytest.mark.parametrize('kernel', [3, 5, 7])
def test_compiled_flex_forward_on_cpu_sweep(kernel, dilation, rpb, fresh_dynamo):
    _assert_compiled_flex_matches_reference(kernel, dilation, max(13, kernel * dilation + 2),
                                            max(11, kernel * dilation + 1), rpb)


@pytest.mark.parametrize('small_map,H,W', [('clip', 4, 9), ('pad', 4, 9),
                                           pytest.param('clip', 13, 11, marks=pytest.mark.slow)])
def test_compiled_flex_small_maps_match_reference(small_map, H, W, fresh_dynamo):
    """The module on maps smaller than kernel x dilation: clipped dilation, zero-padded short sides, and the authors'
    padding (small_map='pad'), on the compiled flex kernel against the reference backend."""
    torch.manual_seed(0)
    m = NeighborhoodAttention2D(16, 2, kernel_size=5, dilation=3, small_map=small_map).eval()
    x = torch.randn(2, H, W, 16)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings('error', message='.*without torch.compile')
        with force_backend('reference', op='neighborhood'):
            ref = m(x)
        with force_backend('flex', op='neighborhood'):
            out = m(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize('kernel,dilation,H,W', [(3, 1, 13, 11), (3, 2, 11, 8), (7, 2, 23, 19), (5, 3, 40, 33)])
def test_flex_block_mask_is_the_neighbourhood(kernel, dilation, H, W):
    """mask_mod == the reference's neighbour sets, and the BlockMask's blocks cover exactly the blocks holding a
    neighbour pair (full blocks only where every pair is one)."""
    from torch.nn.attention.flex_attention import create_mask
    from zoo.layers.attention.neighborhood import _axis_neighbors, _flex_plan
    tables, block_mask, perm, inverse = _flex_plan((H, W), (kernel, kernel), (dilation, dilation), (1, 1),
                                                   (False, False), torch.device('cpu'))
    rows, cols = _axis_neighbors(H, kernel, dilation)[0], _axis_neighbors(W, kernel, dilation)[0]
    keys = (rows[:, None, :, None] * W + cols[None, :, None, :]).reshape(H * W, -1)  # HW, k * k
    want = torch.zeros(H * W, H * W, dtype=torch.bool).scatter_(1, keys, True)
    if perm is not None:  # dilated maps are flattened group-major
        assert torch.equal(perm[inverse], torch.arange(H * W))
        want = want[perm][:, perm]
    got = create_mask(block_mask.mask_mod, 1, 1, H * W, H * W, device='cpu')[0, 0]
    assert torch.equal(got, want)
    bq, bk = block_mask.BLOCK_SIZE
    nq, nk = -(-H * W // bq), -(-H * W // bk)
    padded = torch.zeros(nq * bq, nk * bk, dtype=torch.bool)
    padded[:H * W, :H * W] = want
    blocks = padded.view(nq, bq, nk, bk)
    assert torch.equal(block_mask.to_dense()[0, 0].bool(), blocks.any(3).any(1))
    full = torch.zeros(nq, nk, dtype=torch.bool)
    fi, fn = block_mask.full_kv_indices[0, 0], block_mask.full_kv_num_blocks[0, 0]
    for i in range(nq):
        full[i, fi[i, :fn[i]]] = True
    inside = torch.zeros(nq * bq, nk * bk, dtype=torch.bool)
    inside[:H * W, :H * W] = True
    assert torch.equal(full, (blocks | ~inside.view(nq, bq, nk, bk)).all(3).all(1) & blocks.any(3).any(1))


@pytest.mark.skipif(not natten_available(), reason='natten not installed')
@pytest.mark.parametrize('kernel,dilation,H,W', [(3, 2, 11, 8), (7, 1, 10, 15), (5, 3, 16, 17)])
def test_natten_parity(kernel, dilation, H, W):
    """zoo's cpu path against natten.na2d (NATTEN >= 0.20 has no rpb). Forward: NATTEN's CPU path (flex_attention)
    has no backward on CPU, so gradients are held to the reference above, which equals NATTEN's forward here."""
    import natten
    q, k, v, _ = _inputs(1, H, W, 2, 8, kernel, False)
    q, k, v = q.detach(), k.detach(), v.detach()
    with force_backend('cpu', op='neighborhood'):
        out = na2d(q, k, v, kernel, dilation)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ref = natten.na2d(q, k, v, kernel_size=kernel, dilation=dilation)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def _authors_model(fixture, **kwargs):
    c = fixture['config']
    return timm.create_model(
        'zoo_dinat_mini', pretrained=True, pretrained_cfg_overlay=dict(file=FIXTURE, num_classes=c['num_classes']),
        embed_dim=c['embed_dim'], mlp_ratio=c['mlp_ratio'], depths=c['depths'], num_heads=c['num_heads'],
        kernel_size=c['kernel_size'], dilations=c['dilations'], layer_scale=c['layer_scale'],
        num_classes=c['num_classes'], **kwargs).eval()


@torch.no_grad()
def test_authors_checkpoint_and_outputs():
    fixture = torch.load(FIXTURE, weights_only=True)
    model = _authors_model(fixture)  # strict load of the authors' key layout through the filter
    torch.testing.assert_close(model(fixture['input']), fixture['output'], atol=1e-4, rtol=0)
    # small maps: the authors' NATTEN 0.14 module pads to kernel * dilation; zoo does the same with small_map='pad'
    padded = _authors_model(fixture, small_map='pad')
    torch.testing.assert_close(padded(fixture['input_small']), fixture['output_small'], atol=1e-4, rtol=0)
    assert torch.isfinite(model(fixture['input_small'])).all()  # default: dilation clipped instead


def test_wrong_variant_checkpoint_is_a_clear_error(tmp_path):
    fixture = torch.load(FIXTURE, weights_only=True)
    path = tmp_path / 'ckpt.pth'
    torch.save({'model': fixture['model']}, path)
    with pytest.raises(ValueError, match='does not fit'):
        timm.create_model('zoo_nat_mini', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


# --- DiNAT_s: the Swin host with (dilated) neighborhood attention ----------------------------------------
DINAT_S_TINY = dict(num_classes=10, embed_dim=8, num_heads=(1, 2, 2, 4), kernel_size=3,
                    dilations=((1, 4), (1, 2), (1, 2, 1), (1,)))


def _dinat_s_authors_layout(model):
    """zoo DiNAT_s weights in the authors' dinats.py names: the official Swin layout (patch_embed, layers.N with
    the patch merging at the end of a level, attn.rpb, plain head)."""
    from zoo.models._convert import rename
    return {'model': rename(model.state_dict(), [
        (r'^stem\.', 'patch_embed.'),
        (r'^stages\.(\d+)\.downsample', lambda m: f'layers.{int(m.group(1)) - 1}.downsample'),
        (r'^stages\.', 'layers.'),
        (r'^head\.fc\.', 'head.'),
    ])}


@torch.no_grad()
def test_dinat_s_blocks_are_the_authors_nat_layer(tmp_path):
    """DiNAT_s's block (Swin host block + HostNeighborhoodAttention) computes what NATBlock computes on the same
    weights (NATBlock is held to the authors' code by the fixture above; the authors' dinats.py layer is nat.py's
    without layer scale), every block has the authors' dilation, and the authors' key layout loads strictly."""
    from zoo.models.nat import HostNeighborhoodAttention, NATBlock
    torch.manual_seed(0)
    model = timm.create_model('zoo_dinat_s_tiny', img_size=64, **DINAT_S_TINY).eval()
    assert [[b.attn.dilation[0] for b in s.blocks] for s in model.stages] == [[1, 4], [1, 2], [1, 2, 1], [1]]
    assert all(isinstance(b.attn, HostNeighborhoodAttention) and b.attn.kernel_size == (3, 3)
               for s in model.stages for b in s.blocks)
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.1)
    block = model.stages[0].blocks[1]
    reference = NATBlock(8, 1, kernel_size=3, dilation=4, mlp_ratio=4.).eval()
    reference.load_state_dict(block.state_dict(), strict=True)
    x = torch.randn(2, 13, 11, 8)
    torch.testing.assert_close(block(x), reference(x), atol=1e-6, rtol=0)

    path = tmp_path / 'dinat_s.pth'
    torch.save(_dinat_s_authors_layout(model), path)
    loaded = timm.create_model('zoo_dinat_s_tiny', pretrained=True, img_size=64, **DINAT_S_TINY,
                               pretrained_cfg_overlay=dict(file=str(path), num_classes=10)).eval()
    image = torch.randn(1, 3, 70, 52)  # not a multiple of the patch or of the merging: padded inside
    torch.testing.assert_close(loaded(image), model(image), atol=0, rtol=0)
    feats = loaded.forward_intermediates(image, intermediates_only=True)
    assert [f.shape[1:] for f in feats] == [(8, 18, 13), (16, 9, 7), (32, 5, 4), (64, 3, 2)]


def test_dinat_s_384_dilations_and_tokens_path():
    """The 384 model's dilations are the authors' (13 / 6 / 3 / 1); on the DeiT host's token path the mixer
    equals its map path."""
    from zoo.models.nat import DINAT_S_VARIANTS, HostNeighborhoodAttention
    assert DINAT_S_VARIANTS['zoo_dinat_s_large_384']['dilations'] == ((1, 13), (1, 6), (1, 3) * 9, (1, 1))
    mixer = HostNeighborhoodAttention(16, 2, kernel_size=3, dilation=2).eval()
    x = torch.randn(2, 9, 7, 16)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x.flatten(1, 2), (9, 7)), mixer(x).flatten(1, 2))
    with pytest.raises(ValueError, match='patch tokens only'):
        HostNeighborhoodAttention(16, 2, num_prefix_tokens=1)


# --- isotropic NAT / DiNAT: the DeiT host with neighborhood attention ---------------------------------------
def _layer_norm(sd, prefix, x):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], sd[prefix + '.weight'], sd[prefix + '.bias'])


@torch.no_grad()
def test_isotropic_matches_authors_forward_on_their_layout(tmp_path):
    """NAT-iso / DiNAT-iso as the authors' isotropic.py computes them, re-composed from NATBlock (held to the
    authors' code by the fixture above): 16x16 patch conv -> LayerNorm -> blocks (dilation 1 / 2 alternating) ->
    LayerNorm -> mean -> head, on weights saved in the authors' names (patch_embed, layers.N, head) and loaded
    strictly through the filter."""
    from zoo.models.nat import NATBlock
    torch.manual_seed(0)
    kwargs = dict(embed_dim=16, depth=3, num_heads=2, kernel_size=3, num_classes=10)
    model = timm.create_model('zoo_dinat_isotropic_small', **kwargs).eval()
    assert [b.attn.dilation[0] for b in model.blocks] == [1, 2, 1]
    assert model.cls_token is None and model.pos_embed is None and not model.has_class_token
    assert {'blocks.0.attn.rpb', 'stem.proj.weight'} & model.no_weight_decay() == {'blocks.0.attn.rpb'}
    for p in model.parameters():
        p.add_(torch.randn_like(p) * 0.1)
    authors = {}
    for k, v in model.state_dict().items():
        for a, b in (('stem.', 'patch_embed.'), ('blocks.', 'layers.'), ('head.fc.', 'head.')):
            if k.startswith(a):
                k = b + k[len(a):]
        authors[k] = v
    path = tmp_path / 'dinat_iso.pth'
    torch.save({'model': authors}, path)
    loaded = timm.create_model('zoo_dinat_isotropic_small', pretrained=True, **kwargs,
                               pretrained_cfg_overlay=dict(file=str(path), num_classes=10)).eval()

    x = torch.randn(2, 3, 160, 128)  # a 10 x 8 patch grid
    y = _layer_norm(authors, 'patch_embed.norm', torch.nn.functional.conv2d(
        x, authors['patch_embed.proj.weight'], authors['patch_embed.proj.bias'], stride=16).permute(0, 2, 3, 1))
    for i, dilation in enumerate((1, 2, 1)):
        block = NATBlock(16, 2, kernel_size=3, dilation=dilation, mlp_ratio=4.).eval()
        block.load_state_dict({k[len(f'layers.{i}.'):]: v for k, v in authors.items() if k.startswith(f'layers.{i}.')})
        y = block(y)
    logits = _layer_norm(authors, 'norm', y).mean((1, 2)) @ authors['head.weight'].T + authors['head.bias']
    torch.testing.assert_close(loaded(x), logits, atol=1e-5, rtol=0)
    feats = loaded.forward_intermediates(torch.randn(1, 3, 70, 50), indices=[0, 2], intermediates_only=True)
    assert [f.shape for f in feats] == [(1, 16, 5, 4)] * 2


# --- ViT-rpb: the DeiT host with global attention + relative position bias --------------------------------
def _authors_rpb_attention(sd, prefix, x, heads):
    """MHSARPB of the authors' isotropic.py on an L x L map x (B, L, L, C), from their weights: their bias lookup
    is the query-minus-key index of every (query, key) pair with both axes of the pair matrix reversed."""
    B, L, _, C = x.shape
    coords = torch.stack(torch.meshgrid(torch.arange(L), torch.arange(L), indexing='ij')).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + L - 1
    index = (rel[0] * (2 * L - 1) + rel[1]).flip(0, 1)
    bias = sd[prefix + 'rpb'].permute(1, 2, 0).flatten(0, 1)[index.flatten()].view(L * L, L * L, heads)
    qkv = (x.flatten(1, 2) @ sd[prefix + 'qkv.weight'].T + sd[prefix + 'qkv.bias']).view(B, L * L, 3, heads, -1)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = (q * q.shape[-1] ** -0.5 @ k.transpose(-2, -1) + bias.permute(2, 0, 1)).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(B, L, L, C)
    return out @ sd[prefix + 'proj.weight'].T + sd[prefix + 'proj.bias']


@torch.no_grad()
def test_vit_rpb_matches_authors_forward_on_their_layout(tmp_path):
    """ViT-rpb as the authors' isotropic.py computes it (patch conv -> LayerNorm -> [x + MHSARPB(LN x), x + MLP(LN x)]
    -> LayerNorm -> mean -> head), on random weights saved in their names (layers.N.attn.rpb and its index buffer)
    and loaded strictly through the filter."""
    from timm.layers import Mlp as TimmMlp
    torch.manual_seed(0)
    kwargs = dict(embed_dim=16, depth=2, num_heads=2, num_classes=10, img_size=80)  # a 5 x 5 grid
    model = timm.create_model('zoo_vit_rpb_small', **kwargs).eval()
    authors = {}
    L = 5
    for k, v in model.state_dict().items():
        for a, b in (('stem.', 'patch_embed.'), ('blocks.', 'layers.'), ('head.fc.', 'head.')):
            if k.startswith(a):
                k = b + k[len(a):]
        if k.endswith('rel_pos.relative_position_bias_table'):
            k = k.replace('rel_pos.relative_position_bias_table', 'rpb')
            authors[k[:-3] + 'relative_position_index'] = torch.zeros(L * L, L * L, dtype=torch.long)
            v = torch.randn(2, 2 * L - 1, 2 * L - 1)
        authors[k] = v + 0.1 * torch.randn_like(v) if v.is_floating_point() else v
    path = tmp_path / 'vitrpb.pth'
    torch.save({'model': authors}, path)
    loaded = timm.create_model('zoo_vit_rpb_small', pretrained=True, **kwargs,
                               pretrained_cfg_overlay=dict(file=str(path), num_classes=10)).eval()

    x = torch.randn(2, 3, 80, 80)
    y = _layer_norm(authors, 'patch_embed.norm', torch.nn.functional.conv2d(
        x, authors['patch_embed.proj.weight'], authors['patch_embed.proj.bias'], stride=16).permute(0, 2, 3, 1))
    for i in range(2):
        p = f'layers.{i}.'
        y = y + _authors_rpb_attention(authors, p + 'attn.', _layer_norm(authors, p + 'norm1', y), heads=2)
        mlp = TimmMlp(16, 64).eval()
        mlp.load_state_dict({k[len(p + 'mlp.'):]: v for k, v in authors.items() if k.startswith(p + 'mlp.')})
        y = y + mlp(_layer_norm(authors, p + 'norm2', y))
    logits = _layer_norm(authors, 'norm', y).mean((1, 2)) @ authors['head.weight'].T + authors['head.bias']
    torch.testing.assert_close(loaded(x), logits, atol=1e-5, rtol=0)
    assert {'blocks.0.attn.rel_pos.relative_position_bias_table'} <= loaded.no_weight_decay()
