"""CSWin and InLine-CSWin against the authors' code (stored fixtures) and against an independent float64 re-derivation
of the authors' forward that reads their checkpoint keys directly; the mixer's backends against each other.

Fixture tests/fixtures/cswin_tiny_cfg.pth was produced once, outside this repo, by a throwaway script:
  1. `git show` microsoft/CSWin-Transformer@f111ae2f771df32006e7afd7916835dd67d4cb9d models/cswin.py and
     segmentation/backbone/cswin_transformer.py into a temporary folder and import them (timm 1.0.31, torch
     2.14.1; einops' Rearrange stubbed by flatten(2).transpose(1, 2), the mmseg/mmcv imports by no-ops);
  2. torch.manual_seed(0); CSWinTransformer(img_size=224, patch_size=4, num_classes=10, embed_dim=8,
     depth=[1, 2, 1, 1], split_size=[1, 2, 7, 7], num_heads=[2, 4, 8, 16], mlp_ratio=4.);
  3. with g = torch.Generator().manual_seed(60), in named_parameters() order every parameter p += 0.1 * N(0, 1);
     model.eval(); 'model' = its float32 state dict (the authors' layout);
  4. 'input' = torch.randint(-96, 97, (1, 3, 224, 224), generator=torch.Generator().manual_seed(61),
     dtype=torch.int8); 'output' = model.double()(input.double() / 32);
  5. the segmentation backbone CSWin(img_size=224, same config) with norm1..norm4 replaced by nn.Identity, the
     same weights loaded (strict, all keys but norm/head), in float64: 'input_any' = randint(..., (1, 3, 168, 296),
     seed 62), 'features_any' = its stage 2-4 outputs (NCHW) for input_any / 32, 'output_any' =
     model.head(model.norm(stage 4 tokens).mean(1)). At 168 x 296 every stripe branch of stages 2-3 pads
     (21 x 37 and 11 x 19 maps, odd pads split unevenly).
Fixture tests/fixtures/agent_cswin_tiny_cfg.pth: the same recipe with LeapLabTHU/Agent-Attention@207ce3eb357b22ef8a15f8fa21cd1f14697bbaba
  agent_transformer/models/agent_cswin.py: CSWinTransformer(..., same config, attn_type='AABB',
  la_split_size='56-28-14-7', agent_num=['9', '16', '49', '49']); parameters perturbed with generator seed 80
  (0.5 * N(0, 1) for the agent bias terms *_bias, 0.1 * N(0, 1) otherwise); input seed 81.
Fixture tests/fixtures/inline_cswin_tiny_cfg.pth: the same recipe with LeapLabTHU/InLine@e463a6f4dbb95893726b294ff83f61a58644bf6e
  models/inline_cswin.py: CSWinTransformer(..., same config, attn_type='IISS', la_split_size='56-28-14-7'),
  generator seeds 70 / 71 (their code runs at the trained square size only).
"""
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import zoo  # noqa: F401
from zoo.layers.attention import CSWinAttention, cswin_attention, force_backend
from zoo.layers.attention.dense import dense_attention
from zoo.models._convert import CheckpointMismatchError

FIXTURES = Path(__file__).parent / 'fixtures'
TINY = dict(num_classes=10, embed_dim=8, depths=(1, 2, 1, 1), num_heads=(2, 4, 8, 16))
HEADS, SPLITS = (2, 4, 8, 16), (1, 2, 7, 7)


def fixture(name):
    return torch.load(FIXTURES / name)


def zoo_model(name, fixture_name):
    path = str(FIXTURES / fixture_name)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path, num_classes=10),
                             **TINY).double().eval()


# --- an independent float64 re-derivation of the authors' forward, on their key names ----------------------------
def _attend(sd, p, q, k, v, heads, x_mean=None):
    """One stripe (or the whole map): q, k, v (C, h, w) -> (C, h, w); softmax attention, or InLine when the
    branch has a residual (x_mean: the block input's mean over the branch's channels); plus LePE on v."""
    C, h, w = q.shape
    d = C // heads
    out = torch.zeros_like(q)
    for i in range(heads):
        qh, kh, vh = (t[i * d:(i + 1) * d].reshape(d, h * w).T for t in (q, k, v))  # tokens x d
        s = d ** -0.5
        if x_mean is None:
            attn = torch.softmax(qh @ kh.T * s, dim=-1)
        else:  # attention weights s / n (q_i . k_j - q_i . mean k) + 1 / n: they sum to one
            n = h * w
            attn = s / n * (qh @ (kh - kh.mean(0)).T) + 1 / n
        out[i * d:(i + 1) * d] = (attn @ vh).T.reshape(d, h, w)
    out = out + F.conv2d(v[None], sd[p + '.get_v.weight'], sd[p + '.get_v.bias'], padding=1, groups=C)[0]
    if x_mean is not None:
        kernel = F.conv1d(x_mean[None, :, None], sd[p + '.residual.0.weight'], sd[p + '.residual.0.bias'], groups=heads)
        kernel = F.conv1d(F.gelu(kernel), sd[p + '.residual.2.weight'], sd[p + '.residual.2.bias'], groups=heads)
        out = out + F.conv2d(v[None], kernel.reshape(C, 1, 3, 3), padding=1, groups=C)[0]
    return out


def _branch(sd, p, qkv, heads, stripe, x_mean=None):
    """qkv (3, C, H, W): stripes of `stripe` (None: the whole map) over a map zero-padded evenly to their multiple."""
    _, C, H, W = qkv.shape
    sh, sw = stripe or (H, W)
    ph, pw = (-H) % sh, (-W) % sw
    qkv = F.pad(qkv, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    out = torch.zeros_like(qkv[0])
    for r in range(0, qkv.shape[2], sh):
        for c in range(0, qkv.shape[3], sw):
            q, k, v = qkv[:, :, r:r + sh, c:c + sw]
            out[:, r:r + sh, c:c + sw] = _attend(sd, p, q, k, v, heads, x_mean)
    return out[:, ph // 2:ph // 2 + H, pw // 2:pw // 2 + W]


def authors_forward(sd, image, heads=HEADS, splits=SPLITS):
    """Logits and stage outputs (C, H, W) of the authors' model for one image (3, H, W), any size."""
    sd = {k: v.double() for k, v in sd.items()}

    def ln(t, p):  # channels-first map
        return F.layer_norm(t.permute(1, 2, 0), t.shape[:1], sd[p + '.weight'], sd[p + '.bias']).permute(2, 0, 1)

    def linear(t, p):
        return torch.einsum('oc,chw->ohw', sd[p + '.weight'], t) + sd[p + '.bias'][:, None, None]

    x = ln(F.conv2d(image[None], sd['stage1_conv_embed.0.weight'], sd['stage1_conv_embed.0.bias'], 4, 2)[0],
           'stage1_conv_embed.2')
    stages = []
    for s in range(1, 5):
        if s > 1:
            x = ln(F.conv2d(x[None], sd[f'merge{s - 1}.conv.weight'], sd[f'merge{s - 1}.conv.bias'], 2, 1)[0],
                   f'merge{s - 1}.norm')
        j = 0
        while f'stage{s}.{j}.qkv.weight' in sd:
            p = f'stage{s}.{j}'
            C, H, W = x.shape
            qkv = linear(ln(x, p + '.norm1'), p + '.qkv').reshape(3, C, H, W)
            inline = f'{p}.attns.0.residual.0.weight' in sd
            x_mean = x.mean(dim=(1, 2)) if inline else None
            if f'{p}.attns.1.get_v.weight' in sd:  # vertical stripes on the first half, horizontal on the second
                half = C // 2
                att = torch.cat([
                    _branch(sd, p + '.attns.0', qkv[:, :half], heads[s - 1] // 2, (H, splits[s - 1])),
                    _branch(sd, p + '.attns.1', qkv[:, half:], heads[s - 1] // 2, (splits[s - 1], W))])
            else:  # global (the last stage, InLine blocks)
                att = _branch(sd, p + '.attns.0', qkv, heads[s - 1], None, x_mean)
            x = x + linear(att, p + '.proj')
            hidden = F.gelu(linear(ln(x, p + '.norm2'), p + '.mlp.fc1'))
            x = x + linear(hidden, p + '.mlp.fc2')
            j += 1
        stages.append(x)
    pooled = ln(x, 'norm').mean(dim=(1, 2))
    return sd['head.weight'] @ pooled + sd['head.bias'], stages


# --- against the authors' code -----------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['zoo_cswin_tiny', 'zoo_inline_cswin_tiny', 'zoo_agent_cswin_tiny'])
@torch.no_grad()
def test_matches_authors_code_at_224(name):
    fixture_name = name[4:-5] + '_tiny_cfg.pth'
    fx = fixture(fixture_name)
    model = zoo_model(name, fixture_name)
    torch.testing.assert_close(model(fx['input'].double() / 32), fx['output'], atol=1e-12, rtol=0)


@torch.no_grad()
def test_cswin_matches_authors_segmentation_backbone_non_square():
    """168 x 296: the authors' any-size code (their segmentation backbone) pads each stripe branch evenly."""
    fx = fixture('cswin_tiny_cfg.pth')
    model = zoo_model('zoo_cswin_tiny', 'cswin_tiny_cfg.pth')
    x = fx['input_any'].double() / 32
    torch.testing.assert_close(model(x), fx['output_any'], atol=1e-12, rtol=0)
    feats = model.forward_intermediates(x, indices=[1, 2, 3], intermediates_only=True)
    for ours, theirs in zip(feats, fx['features_any']):
        torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)


# --- against the independent re-derivation --------------------------------------------------------------------------
@torch.no_grad()
def test_rederivation_matches_authors_code():
    """The re-derivation is itself exact against the stored outputs of the authors' code (so it can stand in for it
    where their code does not run: InLine-CSWin off its trained square size)."""
    fx = fixture('cswin_tiny_cfg.pth')
    logits, stages = authors_forward(fx['model'], fx['input_any'][0].double() / 32)
    torch.testing.assert_close(logits, fx['output_any'][0], atol=1e-12, rtol=0)
    torch.testing.assert_close(stages[-1], fx['features_any'][-1][0], atol=1e-12, rtol=0)
    fx = fixture('inline_cswin_tiny_cfg.pth')
    logits, _ = authors_forward(fx['model'], fx['input'][0].double() / 32)
    torch.testing.assert_close(logits, fx['output'][0], atol=1e-12, rtol=0)


@pytest.mark.parametrize('size', [(60, 92), (36, 36)])
@torch.no_grad()
def test_inline_cswin_any_size_matches_rederivation(size):
    fx = fixture('inline_cswin_tiny_cfg.pth')
    model = zoo_model('zoo_inline_cswin_tiny', 'inline_cswin_tiny_cfg.pth')
    x = torch.randn(2, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ours = model(x)
    for b in range(2):
        torch.testing.assert_close(ours[b], authors_forward(fx['model'], x[b])[0], atol=1e-12, rtol=0)


# --- mixer ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('size', [(9, 13), (14, 14), (3, 2)])
@pytest.mark.parametrize('split_size', [1, 2, 7, None])
@torch.no_grad()  # the native backend serves inference only
def test_mixer_backends_agree(size, split_size):
    """Every dense-attention backend that runs the stripes (sdpa, bmm, native where present) equals 'reference'."""
    torch.manual_seed(0)
    m = CSWinAttention(32, 4, split_size=split_size).eval()
    x = torch.randn(2, *size, 32)
    with force_backend('reference'):
        ref = m(x)
    for name in dense_attention.backends:
        if name == 'reference':
            continue
        with force_backend(name, op='dense'):
            try:
                out = m(x)
            except RuntimeError as e:  # a forced backend that cannot run these shapes
                assert 'does not support' in str(e)
                continue
        torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5, msg=f'backend {name}')


def test_mixer_shapes_and_errors():
    qkv = torch.randn(1, 5, 6, 3, 8)
    w = [torch.randn(4, 1, 3, 3)] * 2
    assert cswin_attention(qkv, 2, 3, w, [None, None]).shape == (1, 5, 6, 8)
    with pytest.raises(ValueError, match='split'):
        CSWinAttention(30, 3, split_size=7)


def test_other_variants_checkpoint_is_a_clear_error():
    path = str(FIXTURES / 'cswin_tiny_cfg.pth')
    with pytest.raises(CheckpointMismatchError, match='missing'):
        timm.create_model('zoo_cswin_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=path, num_classes=10),
                          **dict(TINY, depths=(1, 2, 2, 1)))


def test_flop_count_of_the_mixer():
    """Projections, per-branch LePE and the stripes' q @ k^T + attn @ v, counted exactly (padding not counted
    as work: each branch attends over its padded map, as computed)."""
    from zoo.profile.flops import flop_report
    C, heads, H, W = 32, 4, 6, 9  # split 2: vertical stripes 6 x 2 over W padded to 10, horizontal 2 x 9
    m = CSWinAttention(C, heads, split_size=2)
    macs = flop_report(m, inputs=torch.randn(1, H, W, C))['macs']
    d = C // heads
    linear = H * W * C * 3 * C + H * W * C * C
    lepe = H * 10 * (C // 2) * 9 + H * W * (C // 2) * 9
    attention = 5 * (heads // 2) * 12 ** 2 * 2 * d + 3 * (heads // 2) * 18 ** 2 * 2 * d
    assert macs == linear + lepe + attention, (macs, linear + lepe + attention)


@torch.no_grad()
def test_set_input_size_resamples_agent_terms():
    model = timm.create_model('zoo_agent_cswin_tiny', **TINY).eval()
    attn = model.stages[1].blocks[0].attn
    assert attn.ah_bias.shape[-2] == 28
    model.set_input_size(img_size=(160, 96))
    assert attn.window_size == (20, 12) and attn.ah_bias.shape[-2] == 20 and attn.aw_bias.shape[-1] == 12
    assert model(torch.randn(1, 3, 160, 96)).shape == (1, 10)
