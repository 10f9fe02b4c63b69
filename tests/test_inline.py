"""InLine attention: the mixer against the paper's formula (any H x W), bf16 stability, and InLine-Swin against
the authors' code through a stored fixture.

Fixture tests/fixtures/inline_swin_tiny_cfg.pth was produced once, outside this repo, by a throwaway script:
  1. `git show` LeapLabTHU/InLine@e463a6f4dbb95893726b294ff83f61a58644bf6e models/inline_swin.py into a
     temporary folder and import it (timm 1.0.31, torch 2.14.1);
  2. torch.manual_seed(0); InLineSwin(img_size=224, patch_size=4, embed_dim=8, depths=[2, 1, 4, 1],
     num_heads=[1, 2, 2, 4], window_size=56, num_classes=10, attn_type='IIMS2');
  3. with g = torch.Generator().manual_seed(10), in named_parameters() order every parameter p += N(0, s^2)
     (s = 0.5 for parameters named '*_bias' outside norms - none here - and 0.1 otherwise), then model.eval();
  4. x = torch.randint(-96, 97, (1, 3, 224, 224), generator=torch.Generator().manual_seed(11), dtype=torch.int8);
     the image is x / 32 (exact in fp32);
  5. torch.save({'model': model.state_dict(), 'input': x, 'output': model(x / 32)}) under torch.no_grad().
The state dict is the authors' layout with their buffers (relative_position_index, attn_mask).

Fixture tests/fixtures/inline_pvt_tiny_cfg.pth: the same recipe with models/inline_pvt.py:
  torch.manual_seed(0); PyramidVisionTransformer(img_size=64, patch_size=4, embed_dims=[16, 32, 48, 64],
  num_heads=[1, 2, 2, 4], mlp_ratios=[8, 8, 4, 4], qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
  depths=[1, 2, 1, 1], num_classes=10, attn_type='IIII', la_sr_ratios='1111');
  parameters perturbed as above with generator seed 30; x = randint(-96, 97, (2, 3, 64, 64), int8, seed 31).

Fixture tests/fixtures/inline_deit_tiny_cfg.pth: the same recipe with models/inline_deit.py (loaded with timm's
register_model replaced by a no-op, as their module-level default cfgs predate timm 1.0):
  torch.manual_seed(0); VisionTransformer(img_size=64, patch_size=16, embed_dim=32, depth=4, num_heads=2,
  num_classes=10); parameters perturbed with generator seed 50; x = randint(..., (2, 3, 64, 64), seed 51).
"""
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import zoo  # noqa: F401
from zoo.layers.attention import InLineAttention, inline_attention

FIXTURES = Path(__file__).parent / 'fixtures'
PVT_TINY = dict(num_classes=10, embed_dim=(16, 32, 48, 64), num_heads=(1, 2, 2, 4), depths=(1, 2, 1, 1), img_size=64)
TINY = dict(num_classes=10, embed_dim=8, depths=(2, 1, 4, 1), num_heads=(1, 2, 2, 4), global_blocks=(2, 1, 2, 0))


@torch.no_grad()
def test_inline_swin_matches_authors_fixture():
    fx = torch.load(FIXTURES / 'inline_swin_tiny_cfg.pth', weights_only=True)
    path = str(FIXTURES / 'inline_swin_tiny_cfg.pth')
    model = timm.create_model('zoo_inline_swin_base', pretrained=True,  # IIMS2, as the fixture
                              pretrained_cfg_overlay=dict(file=path, num_classes=10), **TINY).eval()
    diff = (model(fx['input'].float() / 32) - fx['output']).abs().max().item()
    assert diff <= 1e-4, diff


@torch.no_grad()
def test_inline_pvt_matches_authors_fixture():
    fx = torch.load(FIXTURES / 'inline_pvt_tiny_cfg.pth', weights_only=True)
    path = str(FIXTURES / 'inline_pvt_tiny_cfg.pth')
    model = timm.create_model('zoo_inline_pvt_tiny', pretrained=True,
                              pretrained_cfg_overlay=dict(file=path, num_classes=10), **PVT_TINY).eval()
    diff = (model(fx['input'].float() / 32) - fx['output']).abs().max().item()
    assert diff <= 1e-4, diff


@torch.no_grad()
def test_inline_deit_matches_authors_fixture():
    fx = torch.load(FIXTURES / 'inline_deit_tiny_cfg.pth', weights_only=True)
    path = str(FIXTURES / 'inline_deit_tiny_cfg.pth')
    model = timm.create_model('zoo_inline_deit_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=path, num_classes=10),
                              num_classes=10, embed_dim=32, depth=4, num_heads=2, img_size=64).eval()
    diff = (model(fx['input'].float() / 32) - fx['output']).abs().max().item()
    assert diff <= 1e-4, diff


def paper_inline(m: InLineAttention, x: torch.Tensor) -> torch.Tensor:
    """Eq. 5 of the paper with the authors' scaling, plus the predicted-kernel local residual, for an H x W map."""
    B, H, W, C = x.shape
    n, h, d = H * W, m.num_heads, C // m.num_heads
    t = x.reshape(B, n, C)
    q, k, v = (u.reshape(B, n, h, d).transpose(1, 2) for u in m.qkv(t).chunk(3, dim=-1))
    s = d ** -0.5
    out = torch.zeros_like(q)
    for i in range(n):  # attention weights of query i: s/n * (q_i.k_j - q_i.mean(k)) + 1/n, summing to one
        w = s / n * (q[:, :, i:i + 1] @ (k - k.mean(dim=2, keepdim=True)).transpose(-2, -1)) + 1 / n
        out[:, :, i] = (w @ v)[:, :, 0]
    out = out.transpose(1, 2).reshape(B, H, W, C)
    kernel = m.residual(t.mean(dim=1).unsqueeze(-1)).reshape(B, C, 1, 3, 3)
    v_map = v.transpose(1, 2).reshape(B, H, W, C).permute(0, 3, 1, 2)
    res = torch.stack([F.conv2d(v_map[b:b + 1], kernel[b], padding=1, groups=C)[0] for b in range(B)])
    return m.proj(out + res.permute(0, 2, 3, 1))


@pytest.mark.parametrize('captured', [False, True], ids=['eager grouped conv', 'graph shifted sum'])
def test_dynamic_depthwise_conv_matches_per_sample_conv(monkeypatch, captured):
    """Both forms (groups=B*C in eager, the shifted sum while a graph is captured) against one conv per sample,
    forward and backward."""
    import zoo.layers.attention.inline as inline
    monkeypatch.setattr(inline, 'capturing_graph', lambda: captured)
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, 9, requires_grad=True)
    w = torch.randn(3, 5, 3, 3, requires_grad=True)
    y = inline.dynamic_depthwise_conv(x, w)
    ref = torch.cat([F.conv2d(x[b:b + 1], w[b].unsqueeze(1), padding=1, groups=5) for b in range(3)])
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w), g)
    ref_grads = torch.autograd.grad(ref, (x, w), g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('size', [(7, 7), (5, 11), (1, 2)])
@torch.no_grad()
def test_mixer_matches_paper_any_size(size):
    torch.manual_seed(0)
    m = InLineAttention(32, 2).eval()
    x = torch.randn(2, *size, 32)
    torch.testing.assert_close(m(x), paper_inline(m, x), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_mixer_bf16_autocast_stable():
    torch.manual_seed(0)
    m = InLineAttention(64, 4).eval()
    x = torch.randn(2, 28, 20, 64) * 3
    ref = m(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = m(x).float()
    assert torch.isfinite(y).all()
    rel = ((y - ref).norm() / ref.norm()).item()
    assert rel < 1e-2, rel


def test_reductions_run_in_fp32_under_autocast():
    q, k, v = (torch.randn(1, 2, 4096, 16, dtype=torch.bfloat16) for _ in range(3))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = inline_attention(q, k, v)
    exact = inline_attention(q.float(), k.float(), v.float())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), exact, atol=1e-2, rtol=1e-2)


@pytest.mark.slow  # seconds of CPU time, minutes of wall time on a shared 2-core machine
@pytest.mark.parametrize('name', ['zoo_inline_swin_tiny', 'zoo_inline_pvt_tiny', 'zoo_inline_deit_tiny'])
@torch.no_grad()
def test_detection_size_input(name):
    """800x1216, batch 1, on CPU (the global mixer is linear in the number of tokens)."""
    model = timm.create_model(name, features_only=True).eval()
    feats = model(torch.randn(1, 3, 800, 1216))
    shapes = [(50, 76)] * 3 if 'deit' in name else [(200, 304), (100, 152), (50, 76), (25, 38)]
    assert [f.shape[-2:] for f in feats] == shapes
    assert all(torch.isfinite(f).all() for f in feats)
