"""Agent attention: the mixer against a plain re-derivation (any H x W), bf16 stability, checkpoint resampling,
and Agent-Swin against the authors' code through a stored fixture.

Fixture tests/fixtures/agent_swin_tiny_cfg.pth was produced once, outside this repo, by a throwaway script:
  1. `git show` LeapLabTHU/Agent-Attention@207ce3eb357b22ef8a15f8fa21cd1f14697bbaba
     agent_transformer/models/agent_swin.py into a temporary folder and import it (timm 1.0.31, torch 2.14.1);
  2. torch.manual_seed(0); AgentSwinTransformer(img_size=224, patch_size=4, embed_dim=8, depths=[2, 1, 4, 1],
     num_heads=[1, 2, 2, 4], window_size=56, num_classes=10, agent_num=[9, 16, 49, 49], attn_type='AAMB2');
  3. with g = torch.Generator().manual_seed(0), in named_parameters() order every parameter p += N(0, s^2)
     (s = 0.5 for the agent bias terms an/na/ah/aw/ha/wa_bias, 0.1 otherwise), then model.eval();
  4. x = torch.randint(-96, 97, (1, 3, 224, 224), generator=torch.Generator().manual_seed(1), dtype=torch.int8);
     the image is x / 32 (exact in fp32);
  5. torch.save({'model': model.state_dict(), 'input': x, 'output': model(x / 32)}) under torch.no_grad().
The state dict is the authors' layout with their buffers (relative_position_index, attn_mask).

Fixture tests/fixtures/agent_pvt_tiny_cfg.pth: the same recipe with agent_transformer/models/agent_pvt.py:
  torch.manual_seed(0); PyramidVisionTransformer(img_size=64, patch_size=4, embed_dims=[16, 32, 48, 64],
  num_heads=[1, 2, 2, 4], mlp_ratios=[8, 8, 4, 4], qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
  depths=[1, 2, 1, 1], num_classes=10, agent_num=[9, 16, 49, 49], attn_type='AAAA', agent_sr_ratios='1111');
  parameters perturbed as above with generator seed 20; x = randint(-96, 97, (2, 3, 64, 64), int8, seed 21).

Fixture tests/fixtures/agent_deit_tiny_cfg.pth: the same recipe with agent_transformer/models/agent_deit.py (and its
deit.py, loaded as a package with timm's register_model replaced by a no-op because their module-level default
cfgs predate timm 1.0): torch.manual_seed(0); VisionTransformer(img_size=64, patch_size=16, embed_dim=32, depth=4,
  num_heads=2, num_classes=10, agent_num=[9, 4, 49, 49], agent_layer=3) - blocks 0-1 have 9 agents, block 2 has 4,
  block 3 is plain attention; parameters perturbed with generator seed 40; x = randint(..., (2, 3, 64, 64), seed 41).
"""
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import zoo  # noqa: F401
from zoo.layers.attention import AgentAttention, resize_agent_biases
from zoo.layers.attention.agent import resize_grid

FIXTURES = Path(__file__).parent / 'fixtures'
PVT_TINY = dict(num_classes=10, embed_dim=(16, 32, 48, 64), num_heads=(1, 2, 2, 4), depths=(1, 2, 1, 1), img_size=64)
TINY = dict(num_classes=10, embed_dim=8, depths=(2, 1, 4, 1), num_heads=(1, 2, 2, 4), global_blocks=(2, 1, 2, 0))


def _fixture_model(name, fixture, **kwargs):
    path = str(FIXTURES / fixture)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path, num_classes=10),
                             **TINY, **kwargs).eval()


@torch.no_grad()
def test_agent_swin_matches_authors_fixture():
    fx = torch.load(FIXTURES / 'agent_swin_tiny_cfg.pth', weights_only=True)
    model = _fixture_model('zoo_agent_swin_base', 'agent_swin_tiny_cfg.pth')  # AAMB2, as the fixture
    diff = (model(fx['input'].float() / 32) - fx['output']).abs().max().item()
    assert diff <= 1e-4, diff


@torch.no_grad()
def test_agent_pvt_matches_authors_fixture():
    fx = torch.load(FIXTURES / 'agent_pvt_tiny_cfg.pth', weights_only=True)
    path = str(FIXTURES / 'agent_pvt_tiny_cfg.pth')
    model = timm.create_model('zoo_agent_pvt_tiny', pretrained=True,
                              pretrained_cfg_overlay=dict(file=path, num_classes=10), **PVT_TINY).eval()
    diff = (model(fx['input'].float() / 32) - fx['output']).abs().max().item()
    assert diff <= 1e-4, diff
    # built for 96: position embeddings and agent terms resampled from the 64 checkpoint, strict load
    model = timm.create_model('zoo_agent_pvt_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=path, num_classes=10),
                              **dict(PVT_TINY, img_size=96)).eval()
    assert model.stem.pos_embed.shape[1] == 24 * 24 and model.stages[1].blocks[0].attn.ah_bias.shape[-2] == 12
    assert torch.isfinite(model(torch.randn(1, 3, 96, 80))).all()


@torch.no_grad()
def test_agent_deit_matches_authors_fixture():
    fx = torch.load(FIXTURES / 'agent_deit_tiny_cfg.pth', weights_only=True)
    path = str(FIXTURES / 'agent_deit_tiny_cfg.pth')
    kwargs = dict(num_classes=10, embed_dim=32, depth=4, num_heads=2, img_size=64, agent_num=(9, 9, 4, 4), agent_blocks=3)
    model = timm.create_model('zoo_agent_deit_base', pretrained=True,  # agent blocks then plain ones, as the fixture
                              pretrained_cfg_overlay=dict(file=path, num_classes=10), **kwargs).eval()
    diff = (model(fx['input'].float() / 32) - fx['output']).abs().max().item()
    assert diff <= 1e-4, diff
    # built for 80: position embedding and agent terms resampled from the 64 checkpoint, strict load
    model = timm.create_model('zoo_agent_deit_base', pretrained=True, pretrained_cfg_overlay=dict(file=path, num_classes=10),
                              **dict(kwargs, img_size=80)).eval()
    assert model.pos_embed.shape[1] == 1 + 5 * 5 and model.blocks[0].attn.ha_bias.shape[2] == 5
    feats = model.forward_intermediates(torch.randn(1, 3, 80, 96), indices=[1, 3], intermediates_only=True)
    assert [f.shape for f in feats] == [(1, 32, 5, 6)] * 2


@torch.no_grad()
def test_checkpoint_resampled_for_another_size():
    """A 224 checkpoint loads strictly into a model built for 288: the row/column agent terms are resampled."""
    fx = torch.load(FIXTURES / 'agent_swin_tiny_cfg.pth', weights_only=True)
    model = _fixture_model('zoo_agent_swin_base', 'agent_swin_tiny_cfg.pth', img_size=288)
    key = 'layers.0.blocks.0.attn.ah_bias'
    theirs = fx['model'][key]
    ours = model.stages[0].blocks[0].attn.ah_bias
    assert theirs.shape[-2] == 56 and ours.shape[-2] == 72
    torch.testing.assert_close(ours, resize_grid(theirs, (72, 1)))
    y = model(torch.randn(1, 3, 288, 288))
    assert torch.isfinite(y).all()


def test_row_column_resample_equals_bilinear_of_sum():
    """Resampling each row/column term linearly equals resampling their broadcast sum bilinearly (authors' way)."""
    g = torch.Generator().manual_seed(0)
    ah, aw = torch.randn(1, 2, 9, 8, 1, generator=g), torch.randn(1, 2, 9, 1, 6, generator=g)
    ha, wa = torch.randn(1, 2, 8, 1, 9, generator=g), torch.randn(1, 2, 1, 6, 9, generator=g)
    r = resize_agent_biases(dict(ah_bias=ah, aw_bias=aw, ha_bias=ha, wa_bias=wa), (11, 5))
    up = lambda t: F.interpolate(t, size=(11, 5), mode='bilinear', align_corners=False)  # noqa: E731
    torch.testing.assert_close((r['ah_bias'] + r['aw_bias'])[0], up((ah + aw)[0]))
    torch.testing.assert_close((r['ha_bias'] + r['wa_bias'])[0].permute(0, 3, 1, 2), up((ha + wa)[0].permute(0, 3, 1, 2)))


def naive_agent(m: AgentAttention, x: torch.Tensor) -> torch.Tensor:
    """Agent attention written out as the authors' detection code does it, for an H x W map."""
    B, H, W, C = x.shape
    h, d = m.num_heads, C // m.num_heads
    q, k, v = m.qkv(x.reshape(B, H * W, C)).chunk(3, dim=-1)
    agents = F.adaptive_avg_pool2d(q.reshape(B, H, W, C).permute(0, 3, 1, 2), m.agent_shape).flatten(2).transpose(1, 2)
    q, k, v, a = (t.reshape(B, -1, h, d).transpose(1, 2) for t in (q, k, v, agents))
    up = lambda t, size: F.interpolate(t, size=size, mode='bilinear', align_corners=False)  # noqa: E731
    p, n = m.pool_size, H * W
    # to the map size, then (detection configs) over the p x p agent grid to agent_shape
    agent_bias = up(m.an_bias, (H, W)) + up((m.ah_bias + m.aw_bias)[0], (H, W))
    agent_bias = up(agent_bias.reshape(h, p, p, n).permute(0, 3, 1, 2), m.agent_shape).reshape(h, n, -1).transpose(1, 2)
    token_bias = up(m.na_bias, (H, W)) + up((m.ha_bias + m.wa_bias)[0].permute(0, 3, 1, 2), (H, W))
    token_bias = up(token_bias.reshape(h, p, p, n).permute(0, 3, 1, 2), m.agent_shape).reshape(h, n, -1)
    s = d ** -0.5
    agent_v = torch.softmax(a * s @ k.transpose(-2, -1) + agent_bias, dim=-1) @ v
    out = torch.softmax(q * s @ a.transpose(-2, -1) + token_bias, dim=-1) @ agent_v
    out = out.transpose(1, 2).reshape(B, H, W, C)
    v_map = v.transpose(1, 2).reshape(B, H, W, C).permute(0, 3, 1, 2)
    return m.proj(out + m.dwc(v_map).permute(0, 2, 3, 1))


@pytest.mark.parametrize('size,agent_shape', [((12, 12), None), ((9, 17), None), ((3, 2), None),
                                              ((20, 26), (6, 6)), ((9, 17), (3, 5))])
@torch.no_grad()
def test_mixer_matches_plain_definition_any_size(size, agent_shape):
    """Any map size, and the authors' larger downstream agent grids (agent_shape, e.g. 9-12-14-7 for detection)."""
    torch.manual_seed(0)
    m = AgentAttention(32, 2, window_size=(12, 12), agent_num=16, agent_shape=agent_shape).eval()
    for p in (m.an_bias, m.na_bias, m.ah_bias, m.aw_bias, m.ha_bias, m.wa_bias):
        p.normal_(std=0.5)
    x = torch.randn(2, *size, 32)
    torch.testing.assert_close(m(x), naive_agent(m, x), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_mixer_bf16_autocast_stable():
    torch.manual_seed(0)
    m = AgentAttention(64, 4, window_size=(14, 14), agent_num=49).eval()
    x = torch.randn(2, 14, 20, 64)
    ref = m(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = m(x).float()
    assert torch.isfinite(y).all()
    rel = ((y - ref).norm() / ref.norm()).item()
    assert rel < 1e-2, rel


@pytest.mark.slow  # ~10 s of CPU time, minutes of wall time on a shared 2-core machine
@pytest.mark.parametrize('name', ['zoo_agent_swin_tiny', 'zoo_agent_pvt_tiny', 'zoo_agent_deit_tiny'])
@torch.no_grad()
def test_detection_size_input(name):
    """800x1216, batch 1, on CPU (the global mixer is linear in the number of tokens)."""
    model = timm.create_model(name, features_only=True).eval()
    feats = model(torch.randn(1, 3, 800, 1216))
    shapes = [(50, 76)] * 3 if 'deit' in name else [(200, 304), (100, 152), (50, 76), (25, 38)]
    assert [f.shape[-2:] for f in feats] == shapes
    assert all(torch.isfinite(f).all() for f in feats)


@torch.no_grad()
def test_high_resolution_releases_are_built_for_their_size(tmp_path):
    """Agent-DeiT-S 448 and Agent-PVT-M 256 (the authors' cfgs/agent_deit_s_448.yaml, agent_pvt_m_256.yaml) hold
    the position terms of the released checkpoints' size (depth reduced: the shapes do not depend on it), and the
    DeiT one loads a checkpoint in the authors' names strictly."""
    deit = timm.create_model('zoo_agent_deit_small_448', depth=2).eval()
    assert deit.pretrained_cfg['input_size'] == (3, 448, 448)
    assert deit.pos_embed.shape == (1, 1 + 28 * 28, 384)
    assert deit.blocks[0].attn.ah_bias.shape == (1, 6, 49, 28, 1)
    authors = {k.replace('stem.', 'patch_embed.', 1) if k.startswith('stem.') else k.replace('head.fc.', 'head.'): v
               for k, v in deit.state_dict().items()}
    path = tmp_path / 'agent_deit_s_448.pth'
    torch.save({'model': authors}, path)
    loaded = timm.create_model('zoo_agent_deit_small_448', depth=2, pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(1, 3, 448, 448)
    torch.testing.assert_close(loaded(x), deit(x), atol=0, rtol=0)

    pvt = timm.create_model('zoo_agent_pvt_medium_256', depths=(1, 1, 1, 1)).eval()
    assert pvt.pretrained_cfg['input_size'] == (3, 256, 256)
    assert [s.downsample.pos_embed.shape[1] if i else pvt.stem.pos_embed.shape[1]
            for i, s in enumerate(pvt.stages)] == [64 * 64, 32 * 32, 16 * 16, 8 * 8]
    assert [s.blocks[0].attn.ah_bias.shape[-2] for s in pvt.stages] == [64, 32, 16, 8]
